//! Seeded mutation tests of the parsers that read untrusted bytes: the
//! multipart form parser, photo decoding, ONNX import, checkpoint loading
//! and the CSV readers. Each takes a few thousand (hundreds, for the larger
//! seeds) mutants of valid inputs: bytes flipped, inserted, deleted, runs
//! repeated, the file cut short. None may panic or hang, and no mutant may
//! make the process allocate more than `ALLOC_BOUND` at once (a counting
//! allocator watches). Any mutant that fails is printed, to be kept as a
//! regression case.

use arcface::data::photo;
use arcface::io::{checkpoint, onnx_export, onnx_import, tensorfile::TensorFile};
use arcface::kernels::check::Rng;
use arcface::models::{Arch, Head, ModelSpec, Net};
use arcface::nn::CpuBackend;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The most any one parse may hold at once (the test process's other
/// allocations are small next to it).
const ALLOC_BOUND: usize = 1 << 30;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The fuzz tests run one at a time, so that the peak is one parser's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// 0..n (n > 0).
fn below(rng: &mut Rng, n: usize) -> usize {
    rng.range(0, n - 1)
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + below(rng, 8) {
        let at = if v.is_empty() { 0 } else { below(rng, v.len()) };
        match below(rng, 6) {
            0 if !v.is_empty() => v[at] ^= 1 << below(rng, 8),
            1 if !v.is_empty() => v[at] = [0, 0xff, 0x7f, 0x80][below(rng, 4)],
            2 => v.insert(at, below(rng, 256) as u8),
            3 if !v.is_empty() => {
                v.remove(at);
            }
            4 => v.truncate(at),
            _ if !v.is_empty() => {
                let len = (1 + below(rng, 16)).min(v.len() - at);
                let run = v[at..at + len].to_vec();
                for _ in 0..1 + below(rng, 3) {
                    v.splice(at..at, run.iter().copied());
                }
            }
            _ => {}
        }
    }
    v
}

/// Runs `parse` on `n` mutants of each seed: no panic, no allocation past
/// the bound, done within `secs`.
fn fuzz(name: &str, seeds: &[Vec<u8>], n: usize, secs: u64, parse: impl Fn(&[u8])) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = std::time::Instant::now();
    let mut rng = Rng::new(15);
    let base = LIVE.load(Ordering::Relaxed);
    for i in 0..n {
        let seed = &seeds[i % seeds.len()];
        let input = if i < seeds.len() { seed.clone() } else { mutate(&mut rng, seed) };
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&input)));
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        if r.is_err() || peak > ALLOC_BOUND {
            let keep = std::env::temp_dir().join(format!("arcface-fuzz-{name}-{i}.bin"));
            std::fs::write(&keep, &input).unwrap();
            panic!(
                "{name}: mutant {i} {} (kept in {})",
                if r.is_err() { "panicked" } else { "allocated too much" },
                keep.display()
            );
        }
    }
    assert!(started.elapsed().as_secs() < secs, "{name}: {n} inputs took {:?}", started.elapsed());
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arcface-fuzz-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn multipart_forms() {
    let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\norl\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x00\x01\r\n--XyZ--\r\n";
    fuzz("multipart", &[body.to_vec()], 5000, 60, |b| {
        let _ = arcface::serve::multipart::parse(b, "XyZ");
        let _ = arcface::serve::multipart::boundary(&String::from_utf8_lossy(b));
    });
}

#[test]
fn photos() {
    let seeds: Vec<Vec<u8>> =
        ["data/orl/s1/1.pgm", "data/london/001/neutral.jpg", "tests/fixtures/bomb-20000x20000.png"]
            .iter()
            .map(|p| std::fs::read(root().join(p)).unwrap())
            .collect();
    // PNG and BMP seeds too, small ones.
    let img = arcface::data::input::open_rgb(&root().join("data/orl/s2/1.pgm")).unwrap();
    let mut more = seeds;
    for format in [image::ImageFormat::Png, image::ImageFormat::Bmp] {
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), format).unwrap();
        more.push(out);
    }
    fuzz("photo", &more, 1500, 240, |b| {
        let _ = photo::decode(b, photo::DEFAULT_MAX_PIXELS);
    });
}

/// A small MiniNetwork (4x4 inputs) checkpoint and its ONNX export, on the
/// CPU reference backend (no GPU needed).
fn small_model(dir: &Path) -> (PathBuf, PathBuf) {
    let mut b = CpuBackend;
    let spec = ModelSpec { arch: Arch::MiniNet, input: 4, classes: 2, head: Head::Softmax };
    let net = Net::init(&mut b, spec, 1).unwrap();
    let ckpt = dir.join("m.safetensors");
    checkpoint::save(&ckpt, &mut b, &net, &checkpoint::CheckpointMeta::new(spec, vec!["a".into(), "b".into()]))
        .unwrap();
    let onnx = dir.join("m.onnx");
    onnx_export::export(&ckpt, &onnx, false).unwrap();
    (ckpt, onnx)
}

#[test]
fn onnx_imports() {
    let dir = tmp("onnx");
    let (_, onnx) = small_model(&dir);
    let seed = std::fs::read(&onnx).unwrap();
    let file = dir.join("mutant.onnx");
    fuzz("onnx", &[seed], 400, 240, |b| {
        std::fs::write(&file, b).unwrap();
        let _ = onnx_import::from_onnx(&file, 4);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoints() {
    let dir = tmp("ckpt");
    let (ckpt, _) = small_model(&dir);
    let seed = std::fs::read(&ckpt).unwrap();
    fuzz("checkpoint", &[seed], 400, 240, |b| {
        if let Ok(f) = TensorFile::parse(b) {
            if let Ok(meta) = checkpoint::meta_of(Path::new("mutant"), &f) {
                let _ = checkpoint::net_of(Path::new("mutant"), &meta, &f, &mut CpuBackend);
            }
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_files() {
    let dir = tmp("csv");
    let split = b"path,person,label,split\n\"a, b.png\",s1,0,train\nc.png,s2,1,val\nd.png,s1,0,test\n".to_vec();
    let pairs = b"a,b,same\nx.png,y.png,1\n\"x, 2.png\",z.png,false\n".to_vec();
    let lfw = b"1\t2\nAaron_Peirsol\t1\t2\nAJ_Cook\t1\tMarsha_Thomason\t1\n".to_vec();
    let file = dir.join("mutant.csv");
    fuzz("csv", &[split, pairs, lfw], 3000, 120, |b| {
        std::fs::write(&file, b).unwrap();
        let _ = arcface::data::split::Split::read_csv(&file);
        let _ = arcface::recognize::verify::read_pairs(&file, None);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// RecordIO: the record file (every indexed record read, header alone and
/// whole) and the index; a mutant may be refused, never panic or allocate
/// past the bound (a length word of 512 MB is refused before it is read).
#[test]
fn recordio_sets() {
    use arcface::data::recordio::{self, read_header, read_payload, DatasetWriter, Record};
    let dir = tmp("rec");
    let rec = dir.join("train.rec");
    let mut w = DatasetWriter::create(&rec).unwrap();
    for (label, person) in ["s1", "s2"].iter().enumerate() {
        for i in 1..3 {
            w.push(label as u32, std::fs::read(root().join(format!("data/orl/{person}/{i}.pgm"))).unwrap()).unwrap();
        }
    }
    w.finish((112, 92)).unwrap();
    let bytes = std::fs::read(&rec).unwrap();
    let index_text = std::fs::read(recordio::index_path(&rec)).unwrap();
    let offsets: Vec<u64> = recordio::read_index(&recordio::index_path(&rec), bytes.len() as u64)
        .unwrap()
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    fuzz("recordio", &[bytes], 1500, 120, |b| {
        let len = b.len() as u64;
        for &at in &offsets {
            let mut c = std::io::Cursor::new(b);
            if let Ok(p) = read_payload(&mut c, len, at, 1 << 24) {
                let _ = Record::parse(&p);
            }
            let _ = read_header(&mut c, len, at, 1 << 24);
        }
    });
    let idx = dir.join("mutant.idx");
    fuzz("recordio index", &[index_text], 1500, 60, |b| {
        std::fs::write(&idx, b).unwrap();
        let _ = recordio::read_index(&idx, 1 << 20);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Verification sets: the pickle reader on mutants of a set it wrote and
/// of Python 2's spelling.
#[test]
fn verification_sets() {
    use arcface::data::verification_bin::{parse, write};
    let images: Vec<Vec<u8>> =
        (1..5).map(|i| std::fs::read(root().join(format!("data/orl/s1/{i}.pgm"))).unwrap()[..200].to_vec()).collect();
    let py2 = b"\x80\x02]q\x00(U\x02abq\x01U\x02cdq\x02e]q\x03\x88a\x86q\x04.".to_vec();
    fuzz("verification set", &[write(&images, &[true, false]), py2], 3000, 60, |b| {
        let _ = parse(std::io::Cursor::new(b), b.len() as u64);
    });
}
