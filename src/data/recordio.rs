//! MXNet RecordIO, the format insightface distributes its training sets in
//! (`train.rec`, `train.idx`, `property`) and `arcface_torch` reads.
//!
//! A record is the magic word, a length word (low 29 bits the length, high
//! 3 bits a continuation flag: 0 whole, 1 first part, 2 middle, 3 last) and
//! the payload padded with zeros to 4 bytes. A payload holding the magic
//! word at a 4-byte boundary is written in parts, the magic word itself
//! between them left out and put back by the reader. `train.idx` maps
//! record keys to byte offsets, one `key<TAB>offset` line each.
//!
//! An image record's payload is an `IRHeader` (u32 flag, f32 label, u64 id,
//! u64 id2), then `flag` more f32 labels when flag > 0 (the first is the
//! label), then the encoded image. Record 0 of insightface's sets has flag
//! > 0 and labels [end, ...]: the images are the records 1 .. end, those
//! after them describe identities.

use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: u32 = 0xced7_230a;
const HEADER_BYTES: usize = 24;
/// The largest record part the length word can express (29 bits).
const MAX_PART: u64 = (1 << 29) - 1;

/// A record's `IRHeader` and what follows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub flag: u32,
    /// `flag` labels when flag > 0, else the header's one.
    pub labels: Vec<f32>,
    pub id: u64,
    pub id2: u64,
    /// The encoded image (or nothing, for header records).
    pub data: Vec<u8>,
}

impl Record {
    /// The class label (the first label), as `arcface_torch` takes it.
    pub fn label(&self) -> f32 {
        self.labels.first().copied().unwrap_or(0.0)
    }

    /// Parses a payload.
    pub fn parse(payload: &[u8]) -> Result<Record> {
        if payload.len() < HEADER_BYTES {
            bail!("a record of {} bytes, shorter than its 24-byte header", payload.len());
        }
        let u32_at = |i: usize| u32::from_le_bytes(payload[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
        let flag = u32_at(0);
        let (labels, rest) = if flag == 0 {
            (vec![f32::from_bits(u32_at(4))], HEADER_BYTES)
        } else {
            let end = (flag as u64) * 4 + HEADER_BYTES as u64;
            if end > payload.len() as u64 {
                bail!("a record header announcing {flag} labels in a {}-byte record", payload.len());
            }
            let end = end as usize;
            let labels = payload[HEADER_BYTES..end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            (labels, end)
        };
        Ok(Record { flag, labels, id: u64_at(8), id2: u64_at(16), data: payload[rest..].to_vec() })
    }

    /// The payload: the header (flag 0 for one label, else the labels
    /// after it), then the data.
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + 4 * self.labels.len() + self.data.len());
        let many = self.labels.len() != 1;
        out.extend_from_slice(&(if many { self.labels.len() as u32 } else { 0 }).to_le_bytes());
        out.extend_from_slice(&(if many { 0.0 } else { self.labels[0] }).to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.id2.to_le_bytes());
        if many {
            self.labels.iter().for_each(|l| out.extend_from_slice(&l.to_le_bytes()));
        }
        out.extend_from_slice(&self.data);
        out
    }
}

/// The index file next to a record file: `train.rec` -> `train.idx`.
pub fn index_path(rec: &Path) -> PathBuf {
    rec.with_extension("idx")
}

/// The keys and byte offsets of `idx`, in the file's order; every offset
/// must lie inside a record file of `rec_len` bytes.
pub fn read_index(idx: &Path, rec_len: u64) -> Result<Vec<(u64, u64)>> {
    let text = super::bounded::read_to_string(idx, super::bounded::Kind::Input)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let parsed = match (f.next(), f.next(), f.next()) {
            (Some(k), Some(o), None) => k.parse::<u64>().ok().zip(o.parse::<u64>().ok()),
            _ => None,
        };
        let Some((key, offset)) = parsed else {
            bail!("{}:{}: expected `key<TAB>offset` (two whole numbers), got `{line}`", idx.display(), n + 1)
        };
        if offset.saturating_add(8) > rec_len {
            bail!(
                "{}:{}: record {key} at byte {offset}, past the end of its {rec_len}-byte record file",
                idx.display(),
                n + 1
            );
        }
        out.push((key, offset));
    }
    if out.is_empty() {
        bail!("{}: no records indexed", idx.display());
    }
    Ok(out)
}

/// Reads the record at `offset` of `file` (`len` bytes long), joining its
/// parts; refuses a bad magic word, a part past the end of the file, and a
/// record over `max_bytes`, before reading it.
pub fn read_payload<F: Read + Seek>(file: &mut F, len: u64, offset: u64, max_bytes: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = offset;
    loop {
        let mut head = [0u8; 8];
        if at.saturating_add(8) > len {
            bail!("a record at byte {offset} runs past the end of the file");
        }
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut head)?;
        let magic = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if magic != MAGIC {
            bail!("no record at byte {at} (magic {magic:#010x}, not {MAGIC:#010x})");
        }
        let word = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        let (flag, part) = (word >> 29, (word & MAX_PART as u32) as u64);
        let padded = part.div_ceil(4) * 4;
        if at + 8 + padded > len {
            bail!("a record at byte {offset} runs past the end of the file ({part} bytes at byte {})", at + 8);
        }
        if out.len() as u64 + part > max_bytes {
            bail!("a record at byte {offset} of more than {:.1} MB (--max-file-mb)", max_bytes as f64 / 1e6);
        }
        let start = out.len();
        out.resize(start + part as usize, 0);
        file.read_exact(&mut out[start..])?;
        at += 8 + padded;
        match (flag, out.len() == part as usize) {
            (0, true) | (3, false) => return Ok(out),
            (1, true) | (2, false) => out.extend_from_slice(&MAGIC.to_le_bytes()),
            _ => bail!("a record at byte {offset} with its parts out of order (flag {flag})"),
        }
    }
}

/// The record at `offset` without its image: the header and labels alone
/// are read when the record's first part holds them (it does, unless the
/// header itself contains the magic word), else the whole record.
pub fn read_header<F: Read + Seek>(file: &mut F, len: u64, offset: u64, max_bytes: u64) -> Result<Record> {
    let mut head = [0u8; 8 + HEADER_BYTES];
    if offset.saturating_add(head.len() as u64) <= len {
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut head)?;
        let magic = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let word = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let (flag, part) = (word >> 29, (word & MAX_PART as u32) as u64);
        let labels = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as u64;
        let needed = HEADER_BYTES as u64 + 4 * labels;
        if magic == MAGIC && (flag == 0 || flag == 1) && needed <= part && offset + 8 + part <= len {
            let mut payload = head[8..].to_vec();
            payload.resize(needed as usize, 0);
            file.read_exact(&mut payload[HEADER_BYTES..])?;
            return Record::parse(&payload);
        }
    }
    let mut r = Record::parse(&read_payload(file, len, offset, max_bytes)?)?;
    r.data.clear();
    Ok(r)
}

/// Writes records and their index as MXNet's `MXIndexedRecordIO` does.
pub struct Writer {
    rec: std::io::BufWriter<std::fs::File>,
    idx: std::io::BufWriter<std::fs::File>,
    at: u64,
    path: PathBuf,
}

impl Writer {
    /// Creates `rec` and its index beside it.
    pub fn create(rec: &Path) -> Result<Writer> {
        let open = |p: &Path| {
            std::fs::File::create(p)
                .with_context(|| format!("{}: cannot create", p.display()))
                .map(std::io::BufWriter::new)
        };
        Ok(Writer { rec: open(rec)?, idx: open(&index_path(rec))?, at: 0, path: rec.to_path_buf() })
    }

    /// Appends `payload` as record `key`.
    pub fn write(&mut self, key: u64, payload: &[u8]) -> Result<()> {
        if payload.len() as u64 > MAX_PART {
            bail!("{}: a record of {} bytes is over RecordIO's 512 MB", self.path.display(), payload.len());
        }
        let fail = || format!("{}: cannot write", self.path.display());
        writeln!(self.idx, "{key}\t{}", self.at).with_context(fail)?;
        let mut bytes = Vec::with_capacity(payload.len() + 16);
        let mut part_start = 0;
        let aligned = payload.len() / 4 * 4;
        for i in (0..aligned).step_by(4) {
            if payload[i..i + 4] == MAGIC.to_le_bytes() {
                let flag: u32 = if part_start == 0 { 1 } else { 2 };
                bytes.extend_from_slice(&MAGIC.to_le_bytes());
                bytes.extend_from_slice(&((flag << 29) | (i - part_start) as u32).to_le_bytes());
                bytes.extend_from_slice(&payload[part_start..i]);
                part_start = i + 4;
            }
        }
        let flag: u32 = if part_start == 0 { 0 } else { 3 };
        bytes.extend_from_slice(&MAGIC.to_le_bytes());
        bytes.extend_from_slice(&((flag << 29) | (payload.len() - part_start) as u32).to_le_bytes());
        bytes.extend_from_slice(&payload[part_start..]);
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        self.rec.write_all(&bytes).with_context(fail)?;
        self.at += bytes.len() as u64;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        let fail = || format!("{}: cannot write", self.path.display());
        self.rec.flush().with_context(fail)?;
        self.idx.flush().with_context(fail)?;
        Ok(())
    }
}

/// Writes a labelled image set as insightface lays one out: records 1 ..=
/// images the images (`(label, encoded image)`, in the order given, one
/// person's together), then record 0 a header (labels [images + 1, images
/// + 1 + people]) and one record per person with the range of their image
/// records, and `property` (`people,height,width`) beside the file. Images
/// are written as they come: nothing is held but each person's range.
pub struct DatasetWriter {
    w: Writer,
    rec: PathBuf,
    images: u64,
    /// Per label, the first image record and one past the last.
    ranges: Vec<(u64, u64)>,
}

impl DatasetWriter {
    pub fn create(rec: &Path) -> Result<DatasetWriter> {
        Ok(DatasetWriter { w: Writer::create(rec)?, rec: rec.to_path_buf(), images: 0, ranges: Vec::new() })
    }

    /// Appends an image of `label`; a person's images must come together.
    pub fn push(&mut self, label: u32, image: Vec<u8>) -> Result<()> {
        let key = self.images + 1;
        let l = label as usize;
        if self.ranges.len() <= l {
            self.ranges.resize(l + 1, (0, 0));
        }
        match self.ranges[l] {
            (0, 0) => self.ranges[l] = (key, key + 1),
            (first, end) if end == key => self.ranges[l] = (first, end + 1),
            _ => bail!("{}: the images of label {label} do not come together", self.rec.display()),
        }
        let r = Record { flag: 0, labels: vec![label as f32], id: key, id2: 0, data: image };
        self.w.write(key, &r.payload())?;
        self.images += 1;
        Ok(())
    }

    /// Writes the header records and `property` (images `size` = (height,
    /// width)); returns the number of images.
    pub fn finish(mut self, size: (u32, u32)) -> Result<u64> {
        let (n, people) = (self.images, self.ranges.len() as u64);
        let head =
            Record { flag: 2, labels: vec![(n + 1) as f32, (n + 1 + people) as f32], id: 0, id2: 0, data: vec![] };
        self.w.write(0, &head.payload())?;
        for (l, &(first, end)) in self.ranges.iter().enumerate() {
            let r = Record { flag: 2, labels: vec![first as f32, end as f32], id: 0, id2: 0, data: vec![] };
            self.w.write(n + 1 + l as u64, &r.payload())?;
        }
        self.w.finish()?;
        let property = self.rec.with_file_name("property");
        std::fs::write(&property, format!("{people},{},{}\n", size.0, size.1))
            .with_context(|| format!("{}: cannot write", property.display()))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn roundtrip(payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("arcface-recordio-{}-{}", std::process::id(), payload.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let rec = dir.join("t.rec");
        let mut w = Writer::create(&rec).unwrap();
        w.write(7, payload).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&rec).unwrap();
        let index = read_index(&index_path(&rec), bytes.len() as u64).unwrap();
        assert_eq!(index, vec![(7, 0)]);
        let back = read_payload(&mut Cursor::new(&bytes), bytes.len() as u64, 0, 1 << 20).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        (bytes, back)
    }

    #[test]
    fn a_payload_holding_the_magic_word_is_written_in_parts_and_read_whole() {
        let mut p = b"abcd".to_vec();
        p.extend_from_slice(&MAGIC.to_le_bytes());
        p.extend_from_slice(b"efg");
        let (bytes, back) = roundtrip(&p);
        assert_eq!(back, p);
        // Two parts: [magic, flag 1 | 4, abcd], [magic, flag 3 | 3, efg + pad].
        assert_eq!(bytes.len(), 8 + 4 + 8 + 4);
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), (1 << 29) | 4);
        assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), (3 << 29) | 3);
        // A magic word off the 4-byte grid is data.
        let (bytes, back) = roundtrip(&[&b"ab"[..], &MAGIC.to_le_bytes(), b"cd"].concat());
        assert_eq!((bytes.len(), back.len()), (16, 8));
    }

    #[test]
    fn headers_with_one_label_or_many() {
        for labels in [vec![3.0], vec![5.0, 9.0, 1.0]] {
            let r = Record { flag: 0, labels, id: 4, id2: 2, data: b"image".to_vec() };
            let back = Record::parse(&r.payload()).unwrap();
            assert_eq!(back.labels, r.labels);
            assert_eq!((back.id, back.id2, &back.data[..]), (4, 2, &b"image"[..]));
            assert_eq!(back.label(), r.labels[0]);
        }
        assert!(Record::parse(&[0; 10]).unwrap_err().to_string().contains("shorter than its 24-byte header"));
        let mut lying = Record { flag: 0, labels: vec![1.0, 2.0], id: 0, id2: 0, data: vec![] }.payload();
        lying[..4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(Record::parse(&lying).unwrap_err().to_string().contains("announcing 1000 labels"));
    }

    #[test]
    fn broken_records_are_refused() {
        let (bytes, _) = roundtrip(b"0123456789");
        let len = bytes.len() as u64;
        let e = read_payload(&mut Cursor::new(&bytes), len - 4, 0, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("runs past the end"), "{e}");
        let e = read_payload(&mut Cursor::new(&bytes), len, 4, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("no record at byte 4"), "{e}");
        let e = read_payload(&mut Cursor::new(&bytes), len, 0, 5).unwrap_err();
        assert!(e.to_string().contains("--max-file-mb"), "{e}");
    }
}
