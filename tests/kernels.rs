//! Every kernel family, forward and backward, on the GPU against its CPU
//! reference (f64), at fixed odd/prime shapes plus shapes drawn from two seeds.
//! Outputs allocated without zeros start as NaN here, so a kernel that does
//! not write all of its output fails.

mod common;
use arcface::gpu::KernelSet;
use arcface::kernels::check::Rng;
use arcface::kernels::family;
use std::collections::BTreeSet;

/// Runs one family with each kernel set for two seeds; `directions` must
/// all be covered.
fn check(name: &str, directions: &[&str]) {
    let mut gpu = common::gpu();
    gpu.poison_uninit = true;
    let f = family(name).expect("family exists");
    for (set, seed) in KernelSet::ALL.into_iter().flat_map(|set| [(set, 1), (set, 2)]) {
        gpu.kernels = set;
        eprintln!("kernel set {set:?}, seed {seed}");
        let rows = (f.gradcheck)(&gpu, &mut Rng::new(seed)).unwrap();
        common::assert_all_pass(&rows);
        let seen: BTreeSet<String> = rows.iter().map(|r| format!("{} {}", r.kernel, r.direction)).collect();
        for d in directions {
            assert!(seen.contains(*d), "{name}: no `{d}` check (have {seen:?})");
        }
        let shapes: BTreeSet<&str> = rows.iter().map(|r| r.shape.as_str()).collect();
        assert!(shapes.len() >= 4, "{name}: only {} shapes", shapes.len());
    }
}

const CONV: [&str; 4] = ["forward", "backward input", "backward weight", "backward bias"];

#[test]
fn conv2d() {
    let dirs: Vec<String> = CONV.iter().map(|d| format!("conv2d {d}")).collect();
    check("conv2d", &dirs.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn conv2d_gemm_and_im2col_paths_are_checked() {
    let gpu = common::gpu();
    let rows = (family("conv2d").unwrap().gradcheck)(&gpu, &mut Rng::new(3)).unwrap();
    common::assert_all_pass(&rows);
    let gemm = rows.iter().filter(|r| r.shape.ends_with("[gemm]")).count();
    assert!(gemm >= 4, "the 1x1 matmul path must be checked in every direction, got {gemm} rows");
    let im2col = rows.iter().filter(|r| r.shape.ends_with("[im2col]") && r.shape.contains("112x112")).count();
    assert_eq!(im2col, 5, "the stem's im2col path: forward, input and weight gradients, two epilogues");
}

/// The CPU set's im2col path in chunks of images: with the adapter's binding
/// limit lowered to 24 KiB a chunk's matrix holds 3,072 floats, one image's
/// of this shape 2,304, so the batch of 3 runs as 3 chunks (the dispatch
/// count says so: per chunk an im2col and a product each way, a col2im, and
/// an im2col and a product for each of the two epilogue checks).
#[test]
fn im2col_runs_in_chunks_where_the_matrix_exceeds_a_binding() {
    use arcface::kernels::conv2d::{check_shape, Conv2d, Path};
    let mut gpu = common::gpu();
    gpu.poison_uninit = true;
    gpu.kernels = KernelSet::Cpu;
    let s = Conv2d { bias: true, ..Conv2d::new(3, 4, (8, 8), 4, 3, 1, 1) };
    let check = |gpu: &arcface::gpu::Gpu| {
        let (rows, counts) = gpu.counters.during(|| check_shape(gpu, &mut Rng::new(6), "conv2d", &s, Path::Im2col));
        let rows = rows.unwrap();
        common::assert_all_pass(&rows);
        assert_eq!(rows.len(), 6, "forward, input, weight and bias gradients, two epilogues");
        counts.dispatches
    };
    let whole = check(&gpu);
    gpu.limits.max_storage_buffer_binding_size = 24 * 1024;
    let chunked = check(&gpu);
    assert_eq!(chunked, whole + 2 * (6 + 2 * 2), "two more chunks of ten dispatches each");
}

/// Where the adapter has subgroups of 8 (lavapipe), the CPU set's vec4
/// product shares A through them; its fallback for other adapters runs here
/// too, with the subgroup size cleared.
#[test]
fn cpu_set_product_with_and_without_subgroups() {
    let mut gpu = common::gpu();
    gpu.poison_uninit = true;
    gpu.kernels = KernelSet::Cpu;
    let mut sizes = vec![None];
    if gpu.subgroup_size.is_some() {
        sizes.push(gpu.subgroup_size);
    }
    for size in sizes {
        gpu.subgroup_size = size;
        let rows = (family("linear").unwrap().gradcheck)(&gpu, &mut Rng::new(4)).unwrap();
        common::assert_all_pass(&rows);
        assert_eq!(
            rows.iter().filter(|r| r.kernel == "matmul").count(),
            12,
            "the six operand layouts at 20 and 12 rows"
        );
    }
}

#[test]
fn depthwise() {
    check("depthwise", &["depthwise forward", "depthwise backward input", "depthwise backward weight"]);
}

#[test]
fn batchnorm() {
    check(
        "batchnorm",
        &[
            "batchnorm forward",
            "batchnorm running mean",
            "batchnorm running var",
            "batchnorm backward input",
            "batchnorm backward gamma",
            "batchnorm backward beta",
        ],
    );
}

#[test]
fn bn_act_fused_equals_composed() {
    let mut dirs = Vec::new();
    for name in ["bn+prelu", "bn+add", "bn+prelu+add", "bn"] {
        for d in ["forward", "running mean", "running var", "backward input", "backward gamma", "backward beta"] {
            dirs.push(format!("{name} {d}"));
        }
    }
    dirs.push("bn+prelu backward slope".into());
    dirs.push("bn+prelu+add backward slope".into());
    check("bn_act", &dirs.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn activation() {
    check(
        "activation",
        &[
            "prelu forward",
            "prelu backward input",
            "prelu backward slope",
            "relu forward",
            "relu backward input",
            "relu6 forward",
            "relu6 backward input",
        ],
    );
}

#[test]
fn maxpool() {
    check("maxpool", &["maxpool forward", "maxpool backward input"]);
}

#[test]
fn resample() {
    check("resample", &["resample forward"]);
}

#[test]
fn linear() {
    check("linear", &["linear forward", "linear backward input", "linear backward weight", "linear backward bias"]);
}

#[test]
fn residual() {
    check("residual", &["residual forward", "residual backward fan-out"]);
}

#[test]
fn l2norm() {
    check("l2norm", &["l2norm forward", "l2norm backward input"]);
}

#[test]
fn arcface() {
    check("arcface", &["arcface forward", "arcface backward embeddings", "arcface backward class weights"]);
}

#[test]
fn softmax_xent() {
    check("softmax_xent", &["softmax forward", "cross-entropy forward", "cross-entropy backward logits"]);
}

#[test]
fn sgd() {
    check(
        "sgd",
        &[
            "sgd update param",
            "sgd update velocity",
            "sgd scaled update param",
            "sgd scaled update velocity",
            "sgd loss scale",
        ],
    );
}

/// Every family's checks again on the kernels' f16 variants (`check::in_half`:
/// inputs rounded to and stored in f16, outputs that follow their input's
/// precision stored in f16, compared at `Tol::half`), with each kernel set:
/// the variants `gpu::half` derives compute what the f32 kernels compute.
/// Adapters without f16 storage refuse it, which the test checks instead.
#[test]
fn every_family_on_its_f16_variants() {
    use arcface::kernels::{check::in_half, FAMILIES};
    let mut gpu = common::gpu();
    gpu.poison_uninit = true;
    if !gpu.has_f16() {
        let err = in_half(|| (family("linear").unwrap().gradcheck)(&gpu, &mut Rng::new(1))).unwrap_err();
        assert!(err.to_string().contains("no f16 storage"), "{err:#}");
        return;
    }
    for set in KernelSet::ALL {
        gpu.kernels = set;
        for f in FAMILIES {
            eprintln!("kernel set {set:?}, {}", f.name);
            let rows = in_half(|| (f.gradcheck)(&gpu, &mut Rng::new(1))).unwrap();
            common::assert_all_pass(&rows);
        }
    }
}
