//! The README's commands as written: every command in its shell blocks
//! parses (flags and values as shown), and the "On your own photos" block
//! runs from start to end, the server included. A README that drifts from
//! the program fails here.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of each ```sh block, with the heading above the block.
fn shell_blocks() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let (mut blocks, mut heading, mut open): (Vec<(String, Vec<String>)>, String, bool) =
        (vec![], String::new(), false);
    for line in readme.lines() {
        if line.starts_with('#') && !open {
            heading = line.trim_start_matches('#').trim().to_string();
        } else if line.trim() == "```sh" {
            open = true;
            blocks.push((heading.clone(), Vec::new()));
        } else if line.trim() == "```" && open {
            open = false;
        } else if open {
            blocks.last_mut().unwrap().1.push(line.to_string());
        }
    }
    blocks
}

/// The `arcface` commands of a shell line, as arguments (the program name
/// first): `arcface ...` and `cargo run --release -- ...`, split at `&&`,
/// `|` and `>`, comments dropped.
fn commands(line: &str) -> Vec<Vec<String>> {
    let code = line.split(" #").next().unwrap();
    code.split("&&")
        .flat_map(|c| c.split('|'))
        .map(|c| c.split('>').next().unwrap().trim())
        .filter_map(|c| {
            let rest = c.strip_prefix("arcface ").or_else(|| c.strip_prefix("cargo run --release -- "))?;
            Some(std::iter::once("arcface").chain(rest.split_whitespace()).map(String::from).collect())
        })
        .collect()
}

#[test]
fn every_command_in_the_readme_parses() {
    let mut checked = 0;
    for (heading, lines) in shell_blocks() {
        for line in lines {
            for args in commands(&line) {
                arcface::cli::parses(&args).unwrap_or_else(|e| panic!("README, {heading}: `{line}`:\n{e}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} commands found");
}

#[test]
fn on_your_own_photos_runs_as_written() {
    let (_, lines) = shell_blocks().into_iter().find(|(h, _)| h == "On your own photos").expect("the section");
    assert_eq!(lines[0], r#"cargo build --release && export PATH="$PWD/target/release:$PATH""#, "the set-up line");
    let bin = Path::new(env!("CARGO_BIN_EXE_arcface")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let _ = std::fs::remove_dir_all(root().join("runs/own"));
    let mut outputs = Vec::new();
    for line in &lines[1..] {
        if line.starts_with("arcface serve ") {
            // The server runs until stopped: on a free port, asked for its
            // models, then stopped.
            let mut child = Command::new("bash")
                .args(["-c", &format!("exec {line} --bind 127.0.0.1:0")])
                .current_dir(root())
                .env("PATH", &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut first = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
            let addr = first.trim().strip_prefix("serving on http://").unwrap_or_else(|| panic!("`{line}`: {first}"));
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /api/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            let _ = child.kill();
            let _ = child.wait();
            assert!(answer.contains("\"mobilefacenet\"") && answer.contains("\"embedding\""), "{answer}");
            continue;
        }
        let out = Command::new("bash").args(["-c", line]).current_dir(root()).env("PATH", &path).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "`{line}` failed:\n{stdout}\n{stderr}");
        outputs.push((line.clone(), stdout.to_string(), stderr.to_string()));
    }
    let said = |cmd: &str| outputs.iter().find(|(l, _, _)| l.starts_with(cmd)).unwrap().clone();
    let (_, enrolled, _) = said("arcface enroll");
    assert!(enrolled.contains("60 people (60 photos, aligned faces)"), "{enrolled}");
    let (_, identified, summary) = said("arcface identify data/london/001");
    assert!(
        identified.contains("001/smiling.jpg: 001 (") && identified.contains("044/neutral.jpg: 044 ("),
        "{identified}"
    );
    assert!(summary.contains("3 named, 0 unknown, 0 without a face"), "{summary}");
    let who = std::fs::read_to_string(root().join("runs/own/who.csv")).unwrap();
    assert_eq!(who.lines().count(), 1 + 120, "{who}");
    let (_, verified, _) = said("arcface verify");
    assert!(verified.contains("different people") && verified.contains("gallery"), "{verified}");
}
