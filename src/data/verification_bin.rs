//! insightface's verification sets (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`,
//! ...): a Python pickle of `(bins, issame_list)`, `bins` the encoded
//! images, pair i the images 2i and 2i + 1, `issame_list` one bool a pair.
//!
//! This reads exactly that structure from the pickle's opcodes, never
//! running pickle code: protocols 2 to 5 (old sets were written by Python
//! 2, images as `str`), lists built by `APPEND`/`APPENDS`, images as byte
//! or string opcodes (an image in several pairs may be pickled once and
//! referenced again), the flags as booleans (or the integers 0 and 1).
//! Anything else (a class, a second reference to a list, another
//! structure) is refused with the opcode and where it stands. The images
//! are not copied: each is kept as where it lies in the file.

use anyhow::{bail, Context, Result};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Where one image lies in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub len: u64,
}

/// The images and the pairs' flags of a `.bin` file.
#[derive(Debug)]
pub struct VerificationSet {
    pub images: Vec<Span>,
    pub same: Vec<bool>,
}

enum Value {
    Mark,
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Bytes(Span),
    Bool(bool),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Mark => "a mark",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Bytes(_) => "bytes",
            Value::Bool(_) => "a bool",
        }
    }
}

/// The most opcodes a set's pickle may have: about five a pair (an image
/// and a memo store twice, a flag), so over 1.5 million pairs, ample for the
/// published sets (LFW has 6,000), while a file of one-byte objects cannot
/// take gigabytes.
const MAX_OPCODES: usize = 8_000_000;

struct Reader<R> {
    r: R,
    at: u64,
    len: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn byte(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.r.read_exact(&mut b).context("ends before the pickle's STOP")?;
        self.at += 1;
        Ok(b[0])
    }

    fn word<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).context("ends inside an opcode")?;
        self.at += N as u64;
        Ok(b)
    }

    /// A newline-terminated name of at most 256 bytes (a GLOBAL's).
    fn line(&mut self) -> Result<String> {
        let mut out = Vec::new();
        loop {
            match self.byte()? {
                b'\n' => return Ok(String::from_utf8_lossy(&out).into_owned()),
                _ if out.len() >= 256 => bail!("a name of more than 256 bytes"),
                b => out.push(b),
            }
        }
    }

    /// `n` bytes of data starting here, skipped over.
    fn span(&mut self, n: u64) -> Result<Span> {
        if n > self.len.saturating_sub(self.at) {
            bail!("an object of {n} bytes at byte {} runs past the end of the file", self.at);
        }
        let s = Span { offset: self.at, len: n };
        self.r.seek(SeekFrom::Current(n as i64))?;
        self.at += n;
        Ok(s)
    }
}

/// Parses the pickle in `r` (`len` bytes).
pub fn parse<R: Read + Seek>(r: R, len: u64) -> Result<VerificationSet> {
    let mut p = Reader { r, at: 0, len };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: std::collections::HashMap<u32, Option<Value>> = std::collections::HashMap::new();
    let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>> {
        let Some(m) = stack.iter().rposition(|v| matches!(v, Value::Mark)) else { bail!("no mark to pop to") };
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    let mut opcodes = 0usize;
    let top = loop {
        let at = p.at;
        opcodes += 1;
        if opcodes > MAX_OPCODES {
            bail!("more than {MAX_OPCODES} opcodes (at byte {at}): not a verification set");
        }
        let op = p.byte()?;
        let step = || format!("opcode {op:#04x} at byte {at}");
        match op {
            0x80 => {
                let v = p.byte()?;
                if !(2..=5).contains(&v) {
                    bail!("pickle protocol {v}; protocols 2 to 5 are read");
                }
            }
            0x95 => {
                p.word::<8>()?; // FRAME: a length hint
            }
            b']' => stack.push(Value::List(Vec::new())),
            b'(' => stack.push(Value::Mark),
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![stack.pop().with_context(step)?]
                } else {
                    pop_mark(&mut stack).with_context(step)?
                };
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    other => bail!("{}: appends to {}, not a list", step(), other.map_or("nothing", |v| v.kind())),
                }
            }
            b'C' | b'U' => {
                let n = p.byte()? as u64;
                stack.push(Value::Bytes(p.span(n)?));
            }
            b'B' | b'T' => {
                let n = u32::from_le_bytes(p.word()?) as u64;
                stack.push(Value::Bytes(p.span(n)?));
            }
            0x8e => {
                let n = u64::from_le_bytes(p.word()?);
                stack.push(Value::Bytes(p.span(n)?));
            }
            // Memo stores of the object on top. Only an image or a flag can
            // be fetched back (an image in several pairs, pickled once).
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => p.byte()? as u32,
                    b'r' => u32::from_le_bytes(p.word()?),
                    _ => memo.len() as u32,
                };
                let kept = match stack.last() {
                    Some(Value::Bytes(s)) => Some(Value::Bytes(*s)),
                    Some(Value::Bool(b)) => Some(Value::Bool(*b)),
                    Some(_) => None,
                    None => bail!("{}: a memo store with nothing to store", step()),
                };
                memo.insert(key, kept);
            }
            b'h' | b'j' => {
                let key = if op == b'h' { p.byte()? as u32 } else { u32::from_le_bytes(p.word()?) };
                match memo.get(&key) {
                    Some(Some(Value::Bytes(s))) => stack.push(Value::Bytes(*s)),
                    Some(Some(Value::Bool(b))) => stack.push(Value::Bool(*b)),
                    Some(_) => {
                        bail!("{}: a second reference to a list or tuple, which a verification set has none of", step())
                    }
                    None => bail!("{}: a reference to memo entry {key}, never stored", step()),
                }
            }
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => match p.byte()? {
                b @ (0 | 1) => stack.push(Value::Bool(b == 1)),
                b => bail!("{}: the integer {b} where a same/different flag (0 or 1) was expected", step()),
            },
            0x86 => {
                let b = stack.pop().with_context(step)?;
                let a = stack.pop().with_context(step)?;
                stack.push(Value::Tuple(vec![a, b]));
            }
            b't' => {
                let items = pop_mark(&mut stack).with_context(step)?;
                stack.push(Value::Tuple(items));
            }
            b'.' => break stack.pop().with_context(step)?,
            b'c' => {
                let name = [p.line()?, p.line()?].join(".");
                bail!(
                    "{}: the pickle names the Python class or function `{name}`; only bytes and bools are read",
                    step()
                )
            }
            0x93 => bail!("{}: the pickle names a Python class; only bytes and bools are read", step()),
            _ => bail!("{}: not part of a verification set's (images, flags) pickle", step()),
        }
    };
    let Value::Tuple(parts) = top else { bail!("the pickle holds {}, not the tuple (images, flags)", top.kind()) };
    let [Value::List(bins), Value::List(flags)] = <[Value; 2]>::try_from(parts)
        .map_err(|p| anyhow::anyhow!("the pickle holds a tuple of {}, not (images, flags)", p.len()))?
    else {
        bail!("the pickle's tuple is not (list of images, list of flags)")
    };
    let images = bins
        .into_iter()
        .map(|v| match v {
            Value::Bytes(s) => Ok(s),
            v => bail!("an image that is {}, not bytes", v.kind()),
        })
        .collect::<Result<Vec<_>>>()?;
    let same = flags
        .into_iter()
        .map(|v| match v {
            Value::Bool(b) => Ok(b),
            v => bail!("a same/different flag that is {}, not a bool", v.kind()),
        })
        .collect::<Result<Vec<_>>>()?;
    if images.len() != 2 * same.len() {
        bail!("{} images for {} pairs (two a pair expected)", images.len(), same.len());
    }
    if same.is_empty() {
        bail!("no pairs");
    }
    Ok(VerificationSet { images, same })
}

/// Reads `path`'s structure (not its images); errors name the file.
pub fn open(path: &Path) -> Result<VerificationSet> {
    super::bounded::refuse_unfit(path, super::bounded::Kind::Input)?;
    let f = std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let meta = f.metadata().with_context(|| format!("{}: cannot read", path.display()))?;
    if !meta.is_file() {
        bail!("{}: not a file; give a verification set (.bin)", path.display());
    }
    parse(BufReader::new(f), meta.len())
        .with_context(|| format!("{}: not a verification set (a pickle of (images, flags))", path.display()))
}

/// Writes `(images, flags)` as insightface's sets are written (protocol 2,
/// images as bytes); for tests and for turning photos into a set.
pub fn write(images: &[Vec<u8>], same: &[bool]) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    let list = |out: &mut Vec<u8>, items: &mut dyn Iterator<Item = Vec<u8>>| {
        out.push(b']');
        out.push(b'(');
        for item in items {
            out.extend(item);
        }
        out.push(b'e');
    };
    list(
        &mut out,
        &mut images.iter().map(|im| {
            let mut v = vec![b'B'];
            v.extend_from_slice(&(im.len() as u32).to_le_bytes());
            v.extend_from_slice(im);
            v
        }),
    );
    list(&mut out, &mut same.iter().map(|&s| vec![if s { 0x88 } else { 0x89 }]));
    out.extend_from_slice(&[0x86, b'.']);
    out
}

/// The 10-fold accuracy as insightface's `verification.py` computes it
/// from (cosine similarity, same) pairs: the pairs in order in ten contiguous folds (scikit-learn's unshuffled
/// KFold: the first `n mod 10` folds one pair longer); on each, the
/// threshold on the squared distance between the unit embeddings (2 - 2
/// cos) from 0 to 4 in steps of 0.01 that is the most accurate on the other
/// nine folds (the first on ties), "same" below it. Returns the folds' mean
/// and standard deviation (population).
pub fn fold_accuracy(pairs: &[(f64, bool)]) -> (f64, f64) {
    let n = pairs.len();
    let k = 10.min(n).max(1);
    let dist: Vec<f64> = pairs.iter().map(|p| 2.0 - 2.0 * p.0).collect();
    let grid: Vec<f64> = (0..400).map(|i| i as f64 * 0.01).collect();
    let right = |t: f64, idx: &mut dyn Iterator<Item = usize>| -> (usize, usize) {
        idx.fold((0, 0), |(ok, all), i| (ok + usize::from((dist[i] < t) == pairs[i].1), all + 1))
    };
    let mut accs = Vec::with_capacity(k);
    let mut start = 0;
    for f in 0..k {
        let len = n / k + usize::from(f < n % k);
        let test = start..start + len;
        let mut best: (Option<usize>, f64) = (None, 0.0);
        for &t in &grid {
            let (ok, _) = right(t, &mut (0..n).filter(|i| !test.contains(i)));
            if best.0.is_none_or(|b| ok > b) {
                best = (Some(ok), t);
            }
        }
        let (ok, all) = right(best.1, &mut test.clone());
        accs.push(ok as f64 / all.max(1) as f64);
        start += len;
    }
    let mean = accs.iter().sum::<f64>() / k as f64;
    (mean, (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / k as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse_bytes(b: &[u8]) -> Result<VerificationSet> {
        parse(Cursor::new(b), b.len() as u64)
    }

    #[test]
    fn folds_are_contiguous_with_the_first_best_threshold() {
        // Ten pairs, a fold each: five same (distance 0.2), four different
        // (1.8), and last an impostor at distance 0.1. Trained on the other
        // nine, every fold's threshold lands just above 0.2: right for all
        // but the impostor's fold.
        let mut v = vec![(0.9, true); 5];
        v.extend([(0.1, false); 4]);
        v.push((0.95, false));
        let (mean, std) = fold_accuracy(&v);
        assert!((mean - 0.9).abs() < 1e-12 && (std - 0.3).abs() < 1e-12, "{mean} {std}");
        // Twenty pairs in order: the last fold holds a same pair and the
        // impostor and gets one of the two right, the others both.
        let mut v2: Vec<(f64, bool)> = v[..9].iter().flat_map(|&p| [p, p]).collect();
        v2.extend([(0.9, true), (0.95, false)]);
        let (mean, _) = fold_accuracy(&v2);
        assert!((mean - 0.95).abs() < 1e-12, "{mean}");
    }

    #[test]
    fn reads_what_it_writes() {
        let images = vec![b"one".to_vec(), b"two!".to_vec(), vec![], b"four".to_vec()];
        let bytes = write(&images, &[true, false]);
        let set = parse_bytes(&bytes).unwrap();
        assert_eq!(set.same, vec![true, false]);
        let back: Vec<&[u8]> =
            set.images.iter().map(|s| &bytes[s.offset as usize..(s.offset + s.len) as usize]).collect();
        assert_eq!(back, images.iter().map(|v| &v[..]).collect::<Vec<_>>());
    }

    #[test]
    fn python_2_and_python_3_spellings() {
        // Python 2, protocol 2: `str` images (SHORT_BINSTRING), memo puts,
        // one APPEND; Python 3, protocol 4: a frame, SHORT_BINBYTES, MEMOIZE.
        let py2 = b"\x80\x02]q\x00(U\x02abq\x01U\x02cdq\x02e]q\x03\x88a\x86q\x04.";
        let py3 = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00]\x94(C\x02ab\x94C\x02cd\x94e]\x94K\x01a\x86\x94.";
        for b in [&py2[..], &py3[..]] {
            let set = parse_bytes(b).unwrap();
            assert_eq!(set.same, vec![true]);
            assert_eq!(set.images.len(), 2);
        }
        // One image in both places of a pair: pickled once, fetched from the memo.
        let again = b"\x80\x04]\x94(C\x02ab\x94h\x01e]\x94\x88a\x86\x94.";
        let set = parse_bytes(again).unwrap();
        assert_eq!(set.images, vec![Span { offset: 7, len: 2 }; 2]);
    }

    #[test]
    fn anything_else_is_refused() {
        let cases: [(&[u8], &str); 8] = [
            (b"\x80\x02cnumpy\nndarray\n.", "names the Python class or function `numpy.ndarray`"),
            (b"\x80\x02]h\x00.", "a reference to memo entry 0, never stored"),
            (b"\x80\x02]q\x00h\x00.", "a second reference to a list"),
            (b"\x80\x02]]\x86.", "no pairs"),
            (b"\x80\x02\x88\x88a.", "appends to a bool"),
            (b"\x80\x02]B\xff\xff\xff\x00", "runs past the end"),
            (b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xff.", "runs past the end"),
            (b"\x80\x02](C\x01ae]\x88a\x86.", "1 images for 1 pairs"),
        ];
        for (b, want) in cases {
            let e = format!("{:#}", parse_bytes(b).unwrap_err());
            assert!(e.contains(want), "{e}: wanted `{want}`");
        }
    }
}
