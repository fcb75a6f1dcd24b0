//! A new user with their own photos: whole photos (the London set, one
//! folder per person) and the bundled pretrained MobileFaceNet, no flags
//! beyond the obvious ones. Each photo is shown to the model as the model
//! was trained (aligned faces), photos are read upright whatever their EXIF
//! orientation, and files that are not photos are refused before any work.

mod common;
#[path = "common/load.rs"]
mod load;
#[path = "common/web_client.rs"]
mod web_client;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn arcface(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arcface")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The London photos of one kind (`neutral`, `smiling`), with their person.
fn london(kind: &str) -> Vec<(PathBuf, String)> {
    let mut v: Vec<(PathBuf, String)> = std::fs::read_dir(root().join("data/london"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| (p.join(format!("{kind}.jpg")), p.file_name().unwrap().to_string_lossy().to_string()))
        .collect();
    v.sort();
    v
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arcface-own-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The pretrained network imported, and a gallery enrolled from the
/// neutral photos with nothing but the obvious flags (made once).
fn enrolled() -> &'static (PathBuf, PathBuf) {
    static ONCE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    ONCE.get_or_init(|| {
        common::gpu();
        let dir = scratch("gallery");
        let (model, gallery) = (dir.join("mobilefacenet.safetensors"), dir.join("london.gallery"));
        let onnx = root().join("tests/fixtures/mobilefacenet/mobilefacenet-relu6-112.onnx");
        let out = arcface(&["import", onnx.to_str().unwrap(), "--out", model.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut args = vec!["enroll".to_string()];
        args.extend(london("neutral").iter().map(|(p, _)| p.display().to_string()));
        args.extend(["--checkpoint", model.to_str().unwrap(), "--out", gallery.to_str().unwrap()].map(String::from));
        let out = arcface(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("60 people (60 photos, aligned faces)"), "{}", text(&out.stdout));
        (model, gallery)
    })
}

#[test]
fn london_photos_are_named_without_any_alignment_flag() {
    let (model, gallery) = enrolled();
    // No --align and no --checkpoint: the gallery knows both.
    let mut args = vec!["identify".to_string(), "--gallery".into(), gallery.display().to_string(), "--csv".into()];
    let smiling = london("smiling");
    args.extend(smiling.iter().map(|(p, _)| p.display().to_string()));
    let out = arcface(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 60, "{csv}");
    let right = rows.iter().zip(&smiling).filter(|(r, (_, who))| r[1] == who.as_str()).count();
    assert!(right >= 59, "{right} of 60 named right:\n{csv}");
    assert!(text(&out.stderr).contains(&format!("{right} named, ")), "{}", text(&out.stderr));

    // Two people, with the gallery's calibrated threshold, which it names.
    let (a, b) = (root().join("data/london/001/neutral.jpg"), root().join("data/london/044/smiling.jpg"));
    let out = arcface(&[
        "verify",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--checkpoint",
        model.to_str().unwrap(),
        "--threshold-from",
        gallery.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    assert_eq!(v["same"], false, "{v}");
    assert!(v["threshold_from"].as_str().unwrap().contains("gallery"), "{v}");
    // A person's folder against a photo of them: the same person.
    let out = arcface(&[
        "verify",
        root().join("data/london/001").to_str().unwrap(),
        a.to_str().unwrap(),
        "--checkpoint",
        model.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    assert_eq!(v["same"], true, "{v}");
}

/// `upright` stored sideways, as a phone saves a portrait, with EXIF
/// Orientation 6 ("turn 90 degrees clockwise to view"); and the same JPEG
/// bytes untagged, turned by the image crate and saved losslessly: the
/// upright photo the tagged one must decode to.
fn sideways(upright: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    use image::ImageEncoder;
    let img = image::open(upright).unwrap().to_rgb8();
    let stored = image::imageops::rotate270(&img);
    let encode = |orientation: u8| {
        let mut out = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92);
        let mut exif = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0".to_vec();
        exif.extend_from_slice(&[orientation, 0, 0, 0, 0, 0, 0]);
        enc.set_exif_metadata(exif).unwrap();
        enc.write_image(&stored, stored.width(), stored.height(), image::ExtendedColorType::Rgb8).unwrap();
        out
    };
    let tagged = dir.join("sideways.jpg");
    std::fs::write(&tagged, encode(6)).unwrap();
    let plain = image::load_from_memory(&encode(1)).unwrap().to_rgb8();
    let reference = dir.join("upright.png");
    image::imageops::rotate90(&plain).save(&reference).unwrap();
    (tagged, reference)
}

#[test]
fn a_photo_stored_sideways_with_its_exif_orientation_is_read_upright() {
    let (model, gallery) = enrolled();
    let dir = scratch("sideways");
    let (tagged, upright) = sideways(&root().join("data/london/005/smiling.jpg"), &dir);
    let (t, u) = (tagged.to_str().unwrap(), upright.to_str().unwrap());

    // The command line: the same face, box and landmarks, in upright
    // coordinates, and the same person.
    let out = arcface(&["detect", t, u, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let faces: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(faces[0]["faces"][0], faces[1]["faces"][0], "{faces}");
    let b: Vec<f64> = faces[0]["faces"][0]["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    // A face is taller than it is wide: found upright, not on its side.
    assert!(b[3] - b[1] > (b[2] - b[0]) * 1.1, "{faces}");
    // And in the upright photo's frame: the 300 x 300 London photo.
    assert!(b.iter().all(|&v| (0.0..=300.0).contains(&v)), "{faces}");
    let out = arcface(&["identify", t, u, "--gallery", gallery.to_str().unwrap(), "--json"]);
    let ids: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    assert_eq!(ids[0]["identity"]["answer"], "005", "{ids}");
    assert_eq!(ids[0]["identity"], ids[1]["identity"], "{ids}");

    // The server: the same person and box.
    let h = arcface::serve::start(arcface::serve::Options {
        bind: "127.0.0.1:0".into(),
        limits: Default::default(),
        worker: arcface::serve::worker::Config {
            models: vec![("mfn".into(), model.clone())],
            gallery: Some(gallery.clone()),
            detect: true,
            verify_threshold: 0.5,
            max_batch: arcface::serve::worker::MAX_BATCH,
            gpu: Default::default(),
        },
    })
    .unwrap();
    let (s1, a1) = web_client::predict(h.addr, &std::fs::read(&tagged).unwrap(), "mfn");
    let (s2, a2) = web_client::predict(h.addr, &std::fs::read(&upright).unwrap(), "mfn");
    assert_eq!((s1, s2), (200, 200), "{a1} {a2}");
    assert_eq!((&a1["person"], &a1["box"]), (&a2["person"], &a2["box"]), "{a1} {a2}");
    assert_eq!(a1["person"], "005");
    // An embedding model answers with cosines and the gallery's threshold.
    assert!(a1["top"][0]["cosine"].is_number() && a1["top"][0]["probability"].is_null(), "{a1}");
    assert!(a1["threshold"].is_number(), "{a1}");
    h.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `arcface` to its end; its exit code, stderr, seconds and peak
/// resident memory in MB (from wait4's rusage).
#[cfg(unix)]
fn measured(args: &[&str]) -> (i32, String, f64, f64) {
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waits for our own child; status and usage are valid out-parameters.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    (libc::WEXITSTATUS(status), err, started.elapsed().as_secs_f64(), usage.ru_maxrss as f64 / 1024.0)
}

#[cfg(unix)]
#[test]
fn devices_fifos_and_huge_files_are_refused_at_once() {
    let dir = scratch("bounded");
    let zeros = dir.join("zeros.jpg");
    // 1 GB of zeros (sparse: the size without the disk).
    std::fs::File::create(&zeros).unwrap().set_len(1 << 30).unwrap();
    let fifo = dir.join("pipe.jpg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let model = root().join("data/models/mobilefacenet_orl40.safetensors");
    let m = model.to_str().unwrap();
    for (args, says) in [
        (vec!["predict", "--checkpoint", m, "/dev/zero"], "/dev/zero: a device, not a file"),
        (vec!["predict", "--checkpoint", m, zeros.to_str().unwrap()], "over the limit of 321.0 MB"),
        (vec!["embed", "--checkpoint", m, fifo.to_str().unwrap()], "a FIFO (named pipe), not a file"),
        (vec!["predict", "--checkpoint", "/dev/zero", "data/orl/s1/1.pgm"], "/dev/zero: a device, not a file"),
        (vec!["predict", "--checkpoint", zeros.to_str().unwrap(), "--max-model-mb", "100", "x.png"], "--max-model-mb"),
    ] {
        let (code, err, seconds, rss_mb) = measured(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: `{err}` should say `{says}`");
        assert!(seconds < 1.0 && rss_mb < 100.0, "{args:?}: {seconds:.2} s, {rss_mb:.0} MB");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
