//! multipart/form-data bodies (RFC 7578): the named parts of an upload form.

use std::collections::HashMap;

/// The boundary of a `multipart/form-data; boundary=...` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, rest) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    rest.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// Field name -> bytes. Parts without a name are ignored. Refused, with
/// what is wrong: a body without the boundary its Content-Type announced,
/// and a field sent twice (which of two photos was meant?).
pub fn parse(body: &[u8], boundary: &str) -> Result<HashMap<String, Vec<u8>>, String> {
    let delim = format!("--{boundary}").into_bytes();
    let mut out = HashMap::new();
    let Some(mut pos) = find(body, &delim, 0) else {
        return Err(format!(
            "the upload is not the multipart form its Content-Type announces (boundary `{boundary}` not found)"
        ));
    };
    loop {
        pos += delim.len();
        if body[pos..].starts_with(b"--") {
            break; // closing delimiter
        }
        let Some(head_end) = find(body, b"\r\n\r\n", pos) else { break };
        let head = String::from_utf8_lossy(&body[pos..head_end]).to_string();
        let start = head_end + 4;
        let Some(next) = find(body, &[b"\r\n".as_slice(), &delim].concat(), start) else { break };
        let name = head.lines().find_map(|l| {
            let l = l.trim();
            if !l.to_ascii_lowercase().starts_with("content-disposition:") {
                return None;
            }
            l.split(';').find_map(|p| p.trim().strip_prefix("name=").map(|n| n.trim_matches('"').to_string()))
        });
        if let Some(n) = name {
            if out.insert(n.clone(), body[start..next].to_vec()).is_some() {
                return Err(format!("the form field `{n}` was sent twice; send one"));
            }
        }
        pos = next + 2;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_files() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\norl\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x00\x01\r\n--XyZ--\r\n";
        let p = parse(body, "XyZ").unwrap();
        assert_eq!(p["model"], b"orl");
        assert_eq!(p["image"], b"\x89PNG\r\n\x00\x01");
        assert_eq!(boundary("multipart/form-data; boundary=XyZ").as_deref(), Some("XyZ"));
        assert_eq!(boundary("application/json"), None);
        assert!(parse(b"garbage", "XyZ").unwrap_err().contains("boundary `XyZ` not found"));
        let twice = b"--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\na\r\n--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nb\r\n--B--\r\n";
        assert!(parse(twice, "B").unwrap_err().contains("`image` was sent twice"));
    }
}
