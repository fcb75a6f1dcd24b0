//! A client for the server's tests: one HTTP request, and a W3C WebDriver
//! session on headless Chromium for the page's end-to-end tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

/// (status, body) of one request.
pub fn http(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    // A server that never answers fails the test instead of hanging it.
    s.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // Read the head, then exactly Content-Length bytes (chromedriver keeps
    // the connection open despite `Connection: close`).
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the response head");
        out.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&out[..head_end]).to_string();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
    });
    match len {
        Some(len) => {
            while out.len() < head_end + len {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "connection closed inside the body");
                out.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            s.read_to_end(&mut out).unwrap();
        }
    }
    (status, String::from_utf8_lossy(&out[head_end..]).to_string())
}

/// A multipart form of `fields` (name, bytes): (content type, body).
pub fn form(fields: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let b = "arcfaceTestBoundary7";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f\"\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

/// POST /api/predict: (status, JSON answer).
pub fn predict(addr: SocketAddr, image: &[u8], model: &str) -> (u16, serde_json::Value) {
    let (ct, body) = form(&[("image", image), ("model", model.as_bytes())]);
    let (status, text) = http(addr, "POST", "/api/predict", &ct, &body);
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
}

/// A W3C WebDriver session on chromedriver + headless Chromium (Debian's
/// `chromium` and `chromium-driver`, installed by scripts/setup).
pub struct Browser {
    driver: std::process::Child,
    addr: SocketAddr,
    session: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// With `args` for Chromium on top of the headless defaults.
    pub fn open(args: &[&str]) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver (Debian: chromium-driver) is needed: {e}; run scripts/setup"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = std::time::Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(started.elapsed().as_secs() < 20, "chromedriver did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let chromium_args =
            [&["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,1000"][..], args]
                .concat();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium",
                "args": chromium_args}
        }}});
        let mut b = Browser { driver, addr, session: String::new() };
        let r = b.call("POST", "/session", caps);
        b.session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        b
    }

    pub fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let (_, text) = http(self.addr, method, path, "application/json", body.to_string().as_bytes());
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("chromedriver: {text}"))
    }

    pub fn cmd(&self, method: &str, what: &str, body: serde_json::Value) -> serde_json::Value {
        self.call(method, &format!("/session/{}{what}", self.session), body)["value"].clone()
    }

    pub fn element(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", serde_json::json!({"using": "css selector", "value": css}));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    pub fn js(&self, script: &str) -> serde_json::Value {
        self.cmd("POST", "/execute/sync", serde_json::json!({"script": script, "args": []}))
    }

    /// Polls a script until it returns a non-empty string.
    pub fn wait_for(&self, script: &str, secs: u64) -> String {
        let started = std::time::Instant::now();
        loop {
            if let Some(s) = self.js(script).as_str().filter(|s| !s.is_empty()) {
                return s.to_string();
            }
            assert!(started.elapsed().as_secs() < secs, "timed out waiting for `{script}`");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    pub fn upload_and_go(&self, file: &Path) {
        let input = self.element("#file");
        self.cmd("POST", &format!("/element/{input}/value"), serde_json::json!({"text": file.to_str().unwrap()}));
        let go = self.element("#go");
        self.cmd("POST", &format!("/element/{go}/click"), serde_json::json!({}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.cmd("DELETE", "", serde_json::json!({}));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
