//! The GPU plumbing: adapter choice and its errors, grids beyond the
//! per-dimension workgroup limit, buffers beyond the binding limit, and one
//! submission for many dispatches.

mod common;
use arcface::gpu::{dispatch::grid, Gpu, GpuOptions, KernelSet, Recorder, Tensor};
use arcface::kernels::check::Rng;
use arcface::kernels::{activation, family, residual};

#[test]
fn adapter_is_vulkan_metal_or_dx12_with_real_limits() {
    let gpu = common::gpu();
    let r = gpu.report();
    assert!(["Vulkan", "Metal", "Dx12"].contains(&r.backend.as_str()), "backend {}", r.backend);
    // The adapter's limits, not wgpu's defaults (128 MiB binding, 65535 groups).
    assert_eq!(gpu.limits.max_storage_buffer_binding_size, gpu.device.limits().max_storage_buffer_binding_size);
    assert_eq!(gpu.limits.max_buffer_size, gpu.device.limits().max_buffer_size);
}

#[test]
fn no_adapter_is_one_clear_error() {
    // No Metal on Linux, no Vulkan driver named here: the same message.
    let backend = if cfg!(target_os = "macos") { "dx12" } else { "metal" };
    let err = Gpu::with_options(&GpuOptions { backend: Some(backend.into()), adapter: None, kernels: None })
        .err()
        .expect("no adapter");
    let msg = format!("{err:#}");
    assert!(msg.contains("no usable GPU adapter") && msg.contains("mesa-vulkan-drivers"), "{msg}");
}

#[test]
fn no_vulkan_driver_from_the_cli() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arcface"))
        .arg("info")
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("ARCFACE_BACKEND", "vulkan")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no usable GPU adapter") && stderr.contains("sudo apt-get install mesa-vulkan-drivers"),
        "{stderr}"
    );
}

#[test]
fn unknown_backend_and_adapter_are_named() {
    let e = Gpu::with_options(&GpuOptions { backend: Some("gl".into()), adapter: None, kernels: None }).err().unwrap();
    assert!(format!("{e}").contains("unknown backend `gl`"), "{e}");
    let e = Gpu::with_options(&GpuOptions { backend: None, adapter: Some("no-such-card".into()), kernels: None })
        .err()
        .unwrap();
    assert!(format!("{e}").contains("no adapter name contains `no-such-card`"), "{e}");
}

#[test]
fn grid_split_arithmetic() {
    assert_eq!(grid(1, 65535).unwrap(), (1, 1));
    assert_eq!(grid(65535, 65535).unwrap(), (65535, 1));
    assert_eq!(grid(65536, 65535).unwrap(), (65535, 2));
    assert_eq!(grid(7, 3).unwrap(), (3, 3));
    assert!(grid(10, 3).is_err());
    assert!(grid(65535u64 * 65535 + 1, 65535).is_err());
}

#[test]
fn oversized_grid_runs_every_element() {
    // More than 65535 workgroups of 64 threads: the dispatch is split over y.
    let gpu = common::gpu();
    let n: usize = 65535 * 64 + 1000;
    assert!(n.div_ceil(64) > gpu.limits.max_compute_workgroups_per_dimension as usize);
    let xs: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { -(i as f32) } else { i as f32 }).collect();
    let x = Tensor::from_f32(&gpu, &xs, &[n]).unwrap();
    let mut rec = Recorder::new(&gpu);
    let y = activation::forward(&mut rec, activation::Act::Relu, &x).unwrap();
    rec.submit();
    let ys = y.to_vec(&gpu);
    for i in [0, 1, 2, 3, n / 2, n - 1001, n - 2, n - 1] {
        assert_eq!(ys[i], xs[i].max(0.0), "element {i}");
    }
    assert!(ys.iter().zip(&xs).all(|(y, x)| *y == x.max(0.0)));
}

#[test]
fn every_kernel_family_is_right_with_a_tiny_grid_limit() {
    // With 48 workgroups per dimension, most dispatches of the check shapes
    // become 2-D (the largest, the input gradient of linear's 131072-long
    // check, needs 43 rows), including the one-workgroup-per-channel
    // reduction of linear's bias gradient (67 channels).
    let mut gpu = common::gpu();
    gpu.grid_limit = 48;
    for name in ["conv2d", "linear", "batchnorm", "softmax_xent", "l2norm", "activation", "maxpool"] {
        let rows = (family(name).unwrap().gradcheck)(&gpu, &mut Rng::new(5)).unwrap();
        common::assert_all_pass(&rows);
    }
}

#[test]
fn binding_over_the_limit_is_a_clear_error() {
    let gpu = common::gpu();
    let limit = gpu.limits.max_storage_buffer_binding_size;
    if gpu.limits.max_buffer_size <= limit {
        // An adapter whose buffers are no larger than a binding cannot hit this.
        return;
    }
    let n = (limit / 4 + 1024) as usize;
    let x = Tensor::zeros(&gpu, &[n]).unwrap();
    let mut rec = Recorder::new(&gpu);
    let err = activation::forward(&mut rec, activation::Act::Relu, &x).expect_err("refused");
    let msg = format!("{err}");
    assert!(msg.contains("relu_forward") && msg.contains("max storage binding"), "{msg}");
}

#[test]
fn buffer_over_the_limit_is_refused_before_allocation() {
    let gpu = common::gpu();
    let too_many = (gpu.limits.max_buffer_size / 4 + 1) as usize;
    let err = Tensor::zeros(&gpu, &[too_many]).expect_err("refused");
    assert!(format!("{err}").contains("max buffer size"), "{err}");
}

#[test]
fn many_dispatches_one_submission() {
    // A chain of 50 dependent adds recorded into one encoder: each reads the
    // previous result, so the order and the barriers between passes matter.
    let gpu = common::gpu();
    let one = Tensor::from_f32(&gpu, &[1.0; 100], &[100]).unwrap();
    let mut rec = Recorder::new(&gpu);
    let mut acc = Tensor::zeros(&gpu, &[100]).unwrap();
    for _ in 0..50 {
        acc = residual::add(&mut rec, &acc, &one).unwrap();
    }
    rec.submit();
    assert!(acc.to_vec(&gpu).iter().all(|&v| v == 50.0));
}

#[test]
fn tensor_round_trip_and_views() {
    let gpu = common::gpu();
    let t = Tensor::from_f32(&gpu, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let v = t.reshape(&[3, 2]).unwrap();
    assert_eq!(v.to_vec(&gpu), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert!(t.reshape(&[4]).is_err());
    assert!(Tensor::from_f32(&gpu, &[1.0], &[2]).is_err());
    let l = Tensor::from_u32(&gpu, &[7, 9], &[2]).unwrap();
    assert_eq!(l.to_vec_u32(&gpu), vec![7, 9]);
}

/// A recycled buffer handed out as zeros is cleared at the next submission;
/// a copy recorded from it must still see the zeros when the tensor is
/// dropped before that submission (the packed SGD buffers are filled this
/// way: a second model trained in one process once started from the first
/// one's velocities).
#[test]
fn a_zeroed_tensor_dropped_after_a_recorded_copy_still_reads_as_zeros() {
    let gpu = common::gpu();
    let stale = Tensor::from_f32(&gpu, &[7.0; 64], &[64]).unwrap();
    drop(stale);
    Recorder::new(&gpu).submit(); // the stale buffer is free again
    let zeros = Tensor::zeros(&gpu, &[64]).unwrap(); // gets the stale buffer
    let dst = Tensor::from_f32(&gpu, &[1.0; 64], &[64]).unwrap();
    let mut rec = Recorder::new(&gpu);
    rec.copy(&zeros, &dst).unwrap();
    drop(zeros);
    rec.submit();
    assert_eq!(dst.to_vec(&gpu), vec![0.0; 64]);
}

#[test]
fn kernel_set_is_chosen_from_the_adapter_and_can_be_overridden() {
    // Options without ARCFACE_KERNELS, whatever the environment says.
    let gpu = Gpu::with_options(&GpuOptions::default()).unwrap();
    let expected = if gpu.info.device_type == wgpu::DeviceType::Cpu { KernelSet::Cpu } else { KernelSet::Gpu };
    assert_eq!((gpu.kernels, gpu.kernels_overridden), (expected, false));
    for (name, set) in [("gpu", KernelSet::Gpu), ("CPU", KernelSet::Cpu)] {
        let g = Gpu::with_options(&GpuOptions { kernels: Some(name.into()), ..Default::default() }).unwrap();
        assert_eq!((g.kernels, g.kernels_overridden), (set, true));
    }
    let e = Gpu::with_options(&GpuOptions { kernels: Some("tpu".into()), ..Default::default() }).err().unwrap();
    assert!(format!("{e}").contains("--kernels") && format!("{e}").contains("tpu"), "{e}");
}

/// llvmpipe ends a shader's loops after 65535 iterations without an error
/// (gallivm's loop limiter), which once made the CPU set's 131072-long
/// classifier product come out wrong: the limit is known for that driver,
/// and a dispatch whose invocations would loop longer than the device's
/// limit is refused, naming the kernel, instead of running.
#[test]
fn dispatches_past_the_drivers_loop_limit_are_refused() {
    let mut gpu = common::gpu();
    if gpu.info.driver.contains("llvmpipe") {
        assert_eq!(gpu.max_loop_trips, Some(65_535));
    }
    gpu.kernels = KernelSet::Cpu;
    gpu.max_loop_trips = Some(100);
    let s = arcface::kernels::linear::Linear { n: 2, inp: 1000, out: 3, bias: false };
    let x = Tensor::zeros(&gpu, &[2, 1000]).unwrap();
    let w = Tensor::zeros(&gpu, &[3, 1000]).unwrap();
    let mut rec = Recorder::new(&gpu);
    let err = arcface::kernels::linear::forward(&mut rec, &s, &x, &w, None).err().expect("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("`matmul`") && msg.contains("1000 loop iterations"), "{msg}");
}
