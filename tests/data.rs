//! Dataset scanning, the stratified split and augmentation.

use arcface::data::augment::rotate;
use arcface::data::dataset::Dataset;
use arcface::data::input::Normalization;
use arcface::data::input::{flip_horizontal, to_unit_chw};
use arcface::data::split::{stratified, Split, TEST_FRACTION, VAL_FRACTION};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arcface-data-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn face(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces").join(name)
}

/// `counts[i]` copies of a real face for person i.
fn people(tag: &str, counts: &[usize]) -> PathBuf {
    let root = tmpdir(tag);
    for (i, &n) in counts.iter().enumerate() {
        let d = root.join(format!("p{i}"));
        std::fs::create_dir_all(&d).unwrap();
        for j in 0..n {
            std::fs::copy(face("s1_1.pgm"), d.join(format!("{j}.pgm"))).unwrap();
        }
    }
    root
}

#[test]
fn split_is_stratified_seeded_and_covers_small_classes() {
    let root = people("split", &[10, 10, 3, 4, 2, 1, 25]);
    let data = Dataset::scan(&root, false).unwrap();
    let a = stratified(&data, 7, VAL_FRACTION, TEST_FRACTION);
    let b = stratified(&data, 7, VAL_FRACTION, TEST_FRACTION);
    let c = stratified(&data, 8, VAL_FRACTION, TEST_FRACTION);
    let paths = |s: &Split| s.test.iter().map(|x| x.path.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&a), paths(&b), "same seed, same split");
    assert_ne!(paths(&a), paths(&c), "another seed, another split");
    let all: Vec<_> = a.train.iter().chain(&a.val).chain(&a.test).map(|s| s.path.clone()).collect();
    assert_eq!(all.len(), data.samples.len());
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len(), "no image in two parts");
    for (label, &n) in [10, 10, 3, 4, 2, 1, 25].iter().enumerate() {
        let count = |v: &Vec<arcface::data::dataset::Sample>| v.iter().filter(|s| s.label == label).count();
        let (tr, va, te) = (count(&a.train), count(&a.val), count(&a.test));
        assert_eq!(tr + va + te, n);
        if n >= 3 {
            assert!(tr >= 1 && va >= 1 && te >= 1, "person {label} with {n} images: {tr}/{va}/{te}");
        }
        if n == 10 {
            assert_eq!((tr, va, te), (8, 1, 1));
        }
        if n == 25 {
            // 10% of 25 -> 3 (rounded) test; 12% of 22 -> 3 validation
            assert_eq!((tr, va, te), (19, 3, 3));
        }
    }
    let csv = root.join("split.csv");
    a.write_csv(&csv, &data.people).unwrap();
    let (back, names) = Split::read_csv(&csv).unwrap();
    assert_eq!(paths(&back), paths(&a));
    assert_eq!(names, data.people);
}

#[test]
fn bad_inputs_are_listed_and_skipped() {
    let root = tmpdir("bad");
    let good = root.join("alice");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::copy(face("s1_1.pgm"), good.join("a.pgm")).unwrap();
    std::fs::write(good.join("empty.jpg"), b"").unwrap();
    std::fs::write(good.join("text.png"), b"hello, not a png").unwrap();
    let jpeg = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces/face.jpg")).unwrap();
    // A JPEG start marker, then garbage where the segments should be.
    let mut corrupt = jpeg[..2].to_vec();
    corrupt.extend_from_slice(&[0x42; 300]);
    std::fs::write(good.join("corrupt.jpg"), corrupt).unwrap();
    std::fs::write(good.join("notes.txt"), b"x").unwrap();
    // 16-bit PNG and RGBA are converted, not skipped.
    image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(20, 24, image::Luma([40000u16]))
        .save(good.join("deep.png"))
        .unwrap();
    image::RgbaImage::from_pixel(20, 24, image::Rgba([10, 200, 30, 128])).save(good.join("alpha.png")).unwrap();
    std::fs::create_dir_all(root.join("nobody")).unwrap();
    let bob = root.join("bob");
    std::fs::create_dir_all(&bob).unwrap();
    std::fs::copy(face("s2_1.pgm"), bob.join("1.pgm")).unwrap();

    let data = Dataset::scan(&root, true).unwrap();
    assert_eq!(data.people, vec!["alice", "bob"], "the empty folder is left out");
    let kept: Vec<String> =
        data.samples.iter().map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(kept, vec!["a.pgm", "alpha.png", "deep.png", "1.pgm"]);
    let skipped: Vec<String> = data.skipped.iter().map(|s| format!("{}: {}", s.path.display(), s.reason)).collect();
    for name in ["empty.jpg", "text.png", "corrupt.jpg", "notes.txt", "nobody"] {
        assert!(skipped.iter().any(|s| s.contains(name)), "{name} not reported in {skipped:?}");
    }
    let deep = arcface::data::input::open_rgb(&good.join("deep.png")).unwrap();
    assert_eq!(deep.get_pixel(0, 0).0, [156, 156, 156], "16-bit grey 40000 -> round(155.6) in 8 bits");
    assert!(Dataset::scan(&root.join("missing"), true).is_err());
}

/// A synthetic image: one bright pixel.
fn dot(size: usize, x: usize, y: usize) -> Vec<f32> {
    let mut v = vec![0.0; 3 * size * size];
    for c in 0..3 {
        v[(c * size + y) * size + x] = 1.0;
    }
    v
}

fn brightest(v: &[f32], size: usize) -> (usize, usize) {
    let i = (0..size * size).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    (i % size, i / size)
}

#[test]
fn flip_and_rotation_do_what_they_claim() {
    let n = 21;
    assert_eq!(brightest(&flip_horizontal(&dot(n, 3, 5), n), n), (17, 5));
    // Counter-clockwise: a dot right of the centre goes up.
    assert_eq!(brightest(&rotate(&dot(n, 18, 10), n, 90.0), n), (10, 2));
    assert_eq!(brightest(&rotate(&dot(n, 18, 10), n, -90.0), n), (10, 18));
    // 10 degrees moves a point 8 px from the centre by about 1.4 px, upwards.
    let (x, y) = brightest(&rotate(&dot(n, 18, 10), n, 10.0), n);
    assert!(x == 18 && (8..=9).contains(&y), "({x}, {y})");
    // Zero rotation is the identity; corners come in black.
    let img = image::RgbImage::from_fn(n as u32, n as u32, |x, y| image::Rgb([(x * 10) as u8, (y * 10) as u8, 7]));
    let v = to_unit_chw(&img, n);
    assert_eq!(rotate(&v, n, 0.0), v);
    assert_eq!(rotate(&v, n, 45.0)[0], 0.0);
    let norm = Normalization::default();
    let e = arcface::data::input::to_input(&img, n, &norm);
    assert!((e[0] - (0.0 - 0.485) / 0.229).abs() < 1e-6);
}
