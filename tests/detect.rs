//! MTCNN on the engine against facenet-pytorch's detections of the London
//! photos (tests/fixtures/mtcnn_london_dev.json), the hand-placed pupils,
//! alignment on real photos, and inputs that must not crash.
//!
//! JPEG decoders differ: the reference decoded with PIL (libjpeg-turbo),
//! our `image` crate decodes with zune-jpeg, up to 3 levels apart in about 5%
//! of the values of these photos, which is enough to change which candidate
//! wins in MTCNN's cascade on some photos. The reference comparison therefore
//! decodes the photos with libjpeg-turbo's `djpeg` (Debian package
//! libjpeg-turbo-progs, installed by .ci/run) to test the detector itself;
//! the pupil test goes through our own decoder, the path users get.

mod common;
use arcface::detect::align::{self, TEMPLATE};
use arcface::detect::{Detector, Face, Nets, Options, Photo};
use arcface::kernels::check::{compare_f32, Rng, Tol};
use arcface::kernels::resample::Rect;
use arcface::nn::{CpuBackend, GpuBackend};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn london() -> PathBuf {
    root().join("data/london")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/mtcnn_london_dev.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The photo decoded by libjpeg-turbo, as PIL does.
fn decode_like_pil(path: &Path) -> image::RgbImage {
    let out = Command::new("djpeg").arg("-ppm").arg(path).output().unwrap_or_else(|e| {
        panic!("djpeg (libjpeg-turbo-progs) is needed to decode as the reference did: {e}; `apt-get install libjpeg-turbo-progs`")
    });
    assert!(out.status.success(), "djpeg failed on {}", path.display());
    image::load_from_memory_with_format(&out.stdout, image::ImageFormat::Pnm).unwrap().to_rgb8()
}

fn iou(a: &[f32; 4], b: &[f64]) -> f64 {
    let a: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The issue asks for IoU >= 0.9 and landmarks within 3% of the box width.
/// Decoded as the reference was, the cascade makes the same choices and the
/// outputs agree to f32 rounding (measured: worst IoU 1.0000, landmarks
/// 0.00%), so a regression is caught well before the bounds.
const MIN_IOU: f64 = 0.99;
const MAX_LANDMARK_ERROR: f64 = 0.005;

#[test]
fn london_photos_match_facenet_pytorch() {
    let gpu = common::gpu();
    let mut d = Detector::open(&gpu, None, Options::default()).unwrap();
    let refs = reference();
    let images = refs["images"].as_object().unwrap();
    assert_eq!(images.len(), 120);
    let (mut worst_iou, mut worst_landmark, mut faces) = (1.0f64, 0.0f64, 0);
    let mut bad = Vec::new();
    for (rel, r) in images {
        let path = root().join(rel);
        let found = d.detect(&decode_like_pil(&path)).unwrap();
        let want = r["faces"].as_array().unwrap();
        if found.len() != want.len() {
            bad.push(format!("{rel}: {} faces, reference {}", found.len(), want.len()));
            continue;
        }
        for (f, w) in found.iter().zip(want) {
            let b = floats(&w["box"]);
            let u = iou(&f.bbox, &b);
            let width = b[2] - b[0];
            let lm = f
                .landmarks
                .iter()
                .zip(w["landmarks"].as_array().unwrap())
                .map(|(p, q)| {
                    let q = floats(q);
                    (p[0] as f64 - q[0]).hypot(p[1] as f64 - q[1]) / width
                })
                .fold(0.0, f64::max);
            worst_iou = worst_iou.min(u);
            worst_landmark = worst_landmark.max(lm);
            faces += 1;
            if u < MIN_IOU || lm > MAX_LANDMARK_ERROR {
                bad.push(format!("{rel}: IoU {u:.3}, landmark error {:.1}% of the box width", lm * 100.0));
            }
        }
    }
    eprintln!(
        "{faces} faces: worst IoU {worst_iou:.4}, worst landmark error {:.2}% of the box width",
        worst_landmark * 100.0
    );
    assert!(bad.is_empty(), "{} photos off the reference:\n{}", bad.len(), bad.join("\n"));
}

/// Detected eyes against the hand-placed pupils of the 60 neutral photos,
/// through our own JPEG decoder: mean error <= 5% of the inter-pupil distance.
#[test]
fn eyes_land_on_the_hand_placed_pupils() {
    let gpu = common::gpu();
    let mut d = Detector::open(&gpu, None, Options::default()).unwrap();
    let csv = std::fs::read_to_string(london().join("pupils.csv")).unwrap();
    let (mut sum, mut n, mut worst) = (0.0, 0, 0.0f64);
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let v: Vec<f64> = f[2..6].iter().map(|s| s.parse().unwrap()).collect();
        let (p1, p2) = ([v[0], v[1]], [v[2], v[3]]);
        let path = london().join(f[0]).join(f[1]);
        let img = arcface::data::input::open_rgb(&path).unwrap();
        let faces = d.detect(&img).unwrap();
        assert_eq!(faces.len(), 1, "{}: {} faces", path.display(), faces.len());
        let ipd = (p1[0] - p2[0]).hypot(p1[1] - p2[1]);
        // Pupils in the file are in image order (left of the image first), as MTCNN's eyes.
        for (eye, pupil) in faces[0].landmarks[..2].iter().zip([p1, p2]) {
            let e = (eye[0] as f64 - pupil[0]).hypot(eye[1] as f64 - pupil[1]) / ipd;
            sum += e;
            worst = worst.max(e);
            n += 1;
        }
    }
    let mean = sum / n as f64;
    eprintln!("{n} eyes: mean error {:.2}% of the inter-pupil distance, worst {:.2}%", mean * 100.0, worst * 100.0);
    assert_eq!(n, 120);
    assert!(mean <= 0.05, "mean eye error {:.2}% of the inter-pupil distance", mean * 100.0);
}

/// The alignment fit on the reference's landmarks of all 120 photos: the
/// eyes land within 2 px of the template's (see src/align.rs on the weights).
#[test]
fn alignment_puts_every_reference_face_s_eyes_on_the_template() {
    let refs = reference();
    let mut worst = 0.0f64;
    for (rel, r) in refs["images"].as_object().unwrap() {
        let lm: Vec<[f64; 2]> =
            r["faces"][0]["landmarks"].as_array().unwrap().iter().map(|p| floats(p).try_into().unwrap()).collect();
        let t = align::Similarity::fit(&lm, &TEMPLATE, &align::WEIGHTS);
        for k in 0..2 {
            let p = t.apply(lm[k]);
            let e = (p[0] - TEMPLATE[k][0]).hypot(p[1] - TEMPLATE[k][1]);
            worst = worst.max(e);
            assert!(e <= 2.0, "{rel}: eye {k} lands {e:.2} px from the template");
        }
    }
    eprintln!("worst eye: {worst:.2} px from the template");
}

/// Both photos of a person, aligned: the eyes found in each photo land on
/// the template's eyes within 2 pixels, and so do the hand-placed pupils of
/// the neutral one (an independent check of the warp's geometry).
#[test]
fn aligned_crops_put_the_eyes_on_the_template() {
    let gpu = common::gpu();
    let mut d = Detector::open(&gpu, None, Options::default()).unwrap();
    let pupils = [[125.6, 140.4], [172.9, 138.7]]; // pupils.csv, 001 neutral
    for photo in ["neutral.jpg", "smiling.jpg"] {
        let img = arcface::data::input::open_rgb(&london().join("001").join(photo)).unwrap();
        let faces = d.detect(&img).unwrap();
        let t = align::to_template(&faces[0]);
        let crop = align::align(&img, &faces[0]);
        assert_eq!(crop.dimensions(), (112, 112));
        for (k, eye) in faces[0].landmarks[..2].iter().enumerate() {
            let p = t.apply([eye[0] as f64, eye[1] as f64]);
            let e = (p[0] - TEMPLATE[k][0]).hypot(p[1] - TEMPLATE[k][1]);
            assert!(e <= 2.0, "{photo}: eye {k} lands {e:.2} px from the template");
        }
        if photo == "neutral.jpg" {
            for (k, pupil) in pupils.iter().enumerate() {
                let p = t.apply(*pupil);
                let e = (p[0] - TEMPLATE[k][0]).hypot(p[1] - TEMPLATE[k][1]);
                assert!(e <= 2.0, "pupil {k} lands {e:.2} px from the template eye");
            }
        }
        // The crop shows a face: a detector run on it finds one, eyes near the template.
        let again = d.detect(&crop).unwrap();
        assert_eq!(again.len(), 1, "{photo}: the aligned crop has {} faces", again.len());
    }
}

fn detect_with(img: &image::RgbImage, opt: Options) -> Vec<Face> {
    let gpu = common::gpu();
    let mut d = Detector::open(&gpu, None, opt).unwrap();
    d.detect(img).unwrap()
}

#[test]
fn photos_without_faces_tiny_and_huge_ones_do_not_crash() {
    // Blank and a high-contrast texture: no faces.
    assert!(
        detect_with(&image::RgbImage::from_pixel(200, 150, image::Rgb([128, 128, 128])), Options::default()).is_empty()
    );
    let checker = image::RgbImage::from_fn(160, 120, |x, y| {
        if (x / 8 + y / 8) % 2 == 0 {
            image::Rgb([250, 250, 250])
        } else {
            image::Rgb([5, 5, 5])
        }
    });
    assert!(detect_with(&checker, Options::default()).is_empty());
    // Smaller than the smallest face: nothing to look at, no error.
    assert!(detect_with(&image::RgbImage::new(10, 7), Options::default()).is_empty());
    assert!(detect_with(&image::RgbImage::new(1, 1), Options::default()).is_empty());
    // 4000x3000 with a face scaled up in the middle: searched at 2000x1500
    // (the longest side fitted), its face reported in the photo's own
    // coordinates, with min face 600 (in the searched pixels) and with the
    // default 20.
    let face = arcface::data::input::open_rgb(&london().join("001/neutral.jpg")).unwrap();
    let big_face = image::imageops::resize(&face, 2400, 2400, image::imageops::FilterType::Triangle);
    let mut big = image::RgbImage::from_pixel(4000, 3000, image::Rgb([90, 90, 90]));
    image::imageops::overlay(&mut big, &big_face, 800, 300);
    for min_face in [600.0, 20.0] {
        let found = detect_with(&big, Options { min_face, ..Options::default() });
        assert_eq!(found.len(), 1, "min face {min_face}: {found:?}");
        // The face of 001 neutral is near (100..199, 82..219) at 300 px: x8, +offset.
        let b = found[0].bbox;
        let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        assert!((cx - (800.0 + 149.0 * 8.0)).abs() < 80.0 && (cy - (300.0 + 150.0 * 8.0)).abs() < 120.0, "{b:?}");
        let eye = found[0].landmarks[0];
        assert!(eye[0] > 800.0 && eye[0] < 2000.0 && eye[1] > 300.0 && eye[1] < 1700.0, "{eye:?}");
    }
}

#[test]
fn a_corrupt_file_gets_an_error_naming_it() {
    let gpu = common::gpu();
    let mut d = Detector::open(&gpu, None, Options::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("arcface-detect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("broken.jpg");
    // A JPEG signature followed by garbage (a truncated JPEG decodes, grey-filled).
    let mut bytes = std::fs::read(london().join("001/neutral.jpg")).unwrap()[..2].to_vec();
    bytes.extend_from_slice(&[0x42; 300]);
    std::fs::write(&bad, bytes).unwrap();
    let good = london().join("002/neutral.jpg");
    let r = d.detect_files(&[bad.clone(), good], None).unwrap();
    let err = r[0].error.as_deref().expect("the broken file must fail");
    assert!(err.contains("broken.jpg"), "{err}");
    assert_eq!(r[1].result.as_ref().map(|f| f.len()), Some(1), "the good file still runs");
    std::fs::remove_dir_all(dir).unwrap();
    // Bad options are refused with the option named.
    let e = Detector::open(&gpu, None, Options { min_face: 5.0, ..Options::default() }).err().unwrap();
    assert!(format!("{e:#}").contains("--min-face"));
}

fn same(what: &str, got: &[f32], want: &[f32]) {
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    let row = compare_f32("mtcnn", "forward", what, got, &want, Tol::FORWARD);
    assert!(row.pass, "{what}: max abs {:.2e} {:?}", row.max_abs_err, row.mismatches);
}

/// P-, R- and O-Net on the GPU against the same networks on the CPU
/// references, their inputs resampled from one photo of random pixels: P-Net
/// at an odd size (partial pooling windows), R-Net and O-Net on rectangles
/// larger, smaller and the size of their input; then with a binding limit
/// small enough that P-Net runs in bands of two output rows and the crops in
/// batches of two: the pieces join to the same maps.
#[test]
fn networks_match_the_cpu_references_whole_and_in_pieces() {
    let gpu = common::gpu();
    let weights = root().join("data/mtcnn/mtcnn.safetensors");
    let mut g = GpuBackend::new(&gpu).unwrap();
    let mut c = CpuBackend;
    let ng = Nets::load(&mut g, &weights).unwrap();
    let nc = Nets::load(&mut c, &weights).unwrap();
    let mut rng = Rng::new(5);
    let (h, w) = (37, 29);
    let x: Vec<f32> = rng.uniform(3 * h * w, 0.0, 256.0).iter().map(|v| v.floor()).collect();
    let pg = pollster::block_on(ng.pnet(&mut g, &x, h, w)).unwrap();
    let pc = pollster::block_on(nc.pnet(&mut c, &x, h, w)).unwrap();
    assert_eq!((pg.h, pg.w), (pc.h, pc.w));
    assert_eq!((pg.h, pg.w), (14, 10), "conv 37x29 -> 35x27, ceil-mode pool -> 18x14, two 3x3 convs");
    same("pnet prob", &pg.prob, &pc.prob);
    same("pnet reg", &pg.reg, &pc.reg);
    let (photo_g, photo_c) = (Photo::upload(&mut g, &x, h, w).unwrap(), Photo::upload(&mut c, &x, h, w).unwrap());
    let r = |y0, y1, x0, x1| Rect { y0, y1, x0, x1 };
    let rects = [r(0, 37, 0, 29), r(5, 29, 2, 26), r(10, 20, 3, 12), r(30, 37, 20, 29), r(1, 36, 0, 28)];
    let (rg, rc) = (
        pollster::block_on(ng.rnet(&mut g, &photo_g, &rects)).unwrap(),
        pollster::block_on(nc.rnet(&mut c, &photo_c, &rects)).unwrap(),
    );
    same("rnet prob", &rg.prob, &rc.prob);
    same("rnet reg", &rg.reg.concat(), &rc.reg.concat());
    let (og, oc) = (
        pollster::block_on(ng.onet(&mut g, &photo_g, &rects[..3])).unwrap(),
        pollster::block_on(nc.onet(&mut c, &photo_c, &rects[..3])).unwrap(),
    );
    same("onet prob", &og.prob, &oc.prob);
    same("onet landmarks", &og.landmarks.concat(), &oc.landmarks.concat());
    assert_eq!(og.landmarks.len(), 3);

    // Pieces: budget = limit / 2 = 16 rows of 10 channels of width w -> bands of 2 output rows.
    g.binding_limit = (2 * 16 * 10 * 4 * w) as u64;
    let banded = pollster::block_on(ng.pnet(&mut g, &x, h, w)).unwrap();
    same("pnet prob in bands", &banded.prob, &pg.prob);
    same("pnet reg in bands", &banded.reg, &pg.reg);
    g.binding_limit = (2 * 2 * 32 * 46 * 46 * 4) as u64;
    let chunked = pollster::block_on(ng.onet(&mut g, &photo_g, &rects[..3])).unwrap();
    same("onet in batches of two", &chunked.landmarks.concat(), &og.landmarks.concat());
}
