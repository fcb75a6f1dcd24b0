//! Batches decoded and transformed on worker threads, delivered in order
//! with bounded prefetch: memory holds the batches in flight, never the
//! dataset. Batch k is built whole by worker k mod T; the caller takes the
//! batches in order from each worker's bounded queue, so a slow image
//! delays its batch, never reorders one. What each image gets (an
//! augmentation drawn from a seeded generator, say) is decided by the
//! caller before the batch is handed out, so the result does not depend on
//! the number of threads.

use super::augment::{self, Draw};
use super::dataset::Sample;
use super::input::open_rgb;
use super::Batch;
use anyhow::Result;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};

/// How many threads decode: `requested`, or one per core when 0.
pub fn threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// A batch as loaded: images that failed to decode are left out of it and
/// listed with why (a message that names the file).
pub struct Loaded {
    pub batch: Batch,
    pub failed: Vec<(PathBuf, String)>,
}

/// Loads `batches` (each a list of (sample index, that image's parameter))
/// of `samples` on `threads` workers, each with `depth` finished batches
/// queued at most, turning each decoded image into a model input with
/// `transform`; hands them to `consume` in order until it returns false or
/// the batches run out.
pub fn stream<P, I, F, C>(
    samples: &[Sample],
    batches: I,
    size: usize,
    threads: usize,
    depth: usize,
    transform: F,
    mut consume: C,
) -> Result<()>
where
    P: Send,
    I: Iterator<Item = Vec<(usize, P)>> + Send,
    F: Fn(&image::RgbImage, P) -> Vec<f32> + Sync,
    C: FnMut(Loaded) -> Result<bool>,
{
    let threads = threads.max(1);
    std::thread::scope(|scope| -> Result<()> {
        let mut jobs = Vec::with_capacity(threads);
        let mut done: Vec<Receiver<Loaded>> = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (job_tx, job_rx) = sync_channel::<Vec<(usize, P)>>(1);
            let (out_tx, out_rx) = sync_channel::<Loaded>(depth.max(1));
            jobs.push(job_tx);
            done.push(out_rx);
            let transform = &transform;
            scope.spawn(move || {
                for job in job_rx {
                    let mut loaded = Loaded { batch: Batch::new(size, job.len()), failed: Vec::new() };
                    for (i, p) in job {
                        let s = &samples[i];
                        match open_rgb(&s.path) {
                            Ok(img) => loaded.batch.push(&transform(&img, p), s.label as u32),
                            Err(e) => loaded.failed.push((s.path.clone(), format!("{e:#}"))),
                        }
                    }
                    if out_tx.send(loaded).is_err() {
                        return; // the consumer stopped
                    }
                }
            });
        }
        // Hands batch k to worker k mod T; stops when a worker has gone
        // (the consumer stopped early).
        scope.spawn(move || {
            for (k, job) in batches.enumerate() {
                if jobs[k % jobs.len()].send(job).is_err() {
                    return;
                }
            }
        });
        let mut k = 0;
        // A worker's queue ends when the batches run out.
        while let Ok(loaded) = done[k % threads].recv() {
            k += 1;
            if !consume(loaded)? {
                break;
            }
        }
        drop(done);
        Ok(())
    })
}

/// A training epoch's jobs: each batch's images with their augmentation
/// drawn from `rng`, image by image in batch order (the same draws whatever
/// the number of threads that decode them).
pub fn augmented<'a>(
    batches: impl Iterator<Item = &'a [usize]> + Send + 'a,
    mut rng: rand_chacha::ChaCha8Rng,
) -> impl Iterator<Item = Vec<(usize, Draw)>> + Send + 'a {
    batches.map(move |indices| indices.iter().map(|&i| (i, Draw::new(&mut rng))).collect())
}

/// The evaluation inputs (resize and normalise) of `samples` in batches of
/// `batch_size`, decoded on `threads` workers.
pub fn evaluation_batches(
    samples: &[Sample],
    batch_size: usize,
    size: usize,
    norm: &super::input::Normalization,
    threads: usize,
    consume: impl FnMut(Loaded) -> Result<bool>,
) -> Result<()> {
    let (n, per) = (samples.len(), batch_size.max(1));
    let batches = (0..n).step_by(per).map(move |start| (start..(start + per).min(n)).map(|i| (i, ())).collect());
    stream(samples, batches, size, threads, 2, |img, ()| super::input::to_input(img, size, norm), consume)
}

/// What `bench load` measured: the loader alone, decoding and augmenting
/// as a training epoch does, its batches dropped.
#[derive(Debug, serde::Serialize)]
pub struct LoadThroughput {
    pub images: usize,
    pub failed: usize,
    pub batch: usize,
    pub threads: usize,
    pub size: usize,
    pub seconds: f64,
    pub images_per_s: f64,
    /// The process's peak resident memory (Linux), in MB.
    pub peak_rss_mb: Option<f64>,
}

/// Loads `samples` once as a training epoch would (seeded augmentation at
/// `size`, batches of `batch`) on `threads` workers, and times it.
pub fn measure(samples: &[Sample], size: usize, batch: usize, threads: usize) -> Result<LoadThroughput> {
    use rand::SeedableRng;
    let norm = super::input::Normalization::default();
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let order: Vec<usize> = (0..samples.len()).collect();
    let jobs = augmented(order.chunks(batch.max(1)), rng);
    let (mut images, mut failed) = (0, 0);
    let started = std::time::Instant::now();
    stream(
        samples,
        jobs,
        size,
        threads,
        2,
        |img, d| augment::apply(img, d, size, &norm),
        |l| {
            images += l.batch.len();
            failed += l.failed.len();
            Ok(true)
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(LoadThroughput {
        images,
        failed,
        batch,
        threads,
        size,
        seconds,
        images_per_s: images as f64 / seconds.max(1e-9),
        peak_rss_mb: peak_rss_mb(),
    })
}

/// The process's peak resident set (VmHWM), where the system says it.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(n: usize, dir: &std::path::Path) -> Vec<Sample> {
        std::fs::create_dir_all(dir).unwrap();
        (0..n)
            .map(|i| {
                let path = dir.join(format!("{i}.png"));
                image::RgbImage::from_pixel(4, 4, image::Rgb([i as u8 * 10, 0, 0])).save(&path).unwrap();
                Sample { path, label: i % 3 }
            })
            .collect()
    }

    #[test]
    fn batches_come_in_order_whatever_the_threads_and_broken_images_are_listed() {
        let dir = std::env::temp_dir().join(format!("arcface-loader-{}", std::process::id()));
        let mut s = samples(11, &dir);
        s[4].path = dir.join("missing.png");
        let run = |threads: usize| {
            let mut got = Vec::new();
            let batches = (0..11)
                .collect::<Vec<usize>>()
                .chunks(3)
                .map(|c| c.iter().map(|&i| (i, i as f32)).collect())
                .collect::<Vec<Vec<_>>>();
            stream(
                &s,
                batches.into_iter(),
                2,
                threads,
                1,
                |img, p| vec![img.get_pixel(0, 0)[0] as f32 + p; 12],
                |l| {
                    got.push((
                        l.batch.x.iter().step_by(12).copied().collect::<Vec<f32>>(),
                        l.batch.labels,
                        l.failed.len(),
                    ));
                    Ok(true)
                },
            )
            .unwrap();
            got
        };
        let one = run(1);
        assert_eq!(one.len(), 4);
        assert_eq!(one[1], (vec![33.0, 55.0], vec![0, 2], 1), "image 4 left out of its batch and listed");
        assert_eq!(one[3].0, vec![99.0, 110.0]);
        assert_eq!(run(3), one);
        // The consumer stopping early stops the workers.
        let mut seen = 0;
        let batches = vec![vec![(0usize, ())]; 50];
        stream(
            &s,
            batches.into_iter(),
            2,
            2,
            1,
            |_, ()| vec![0.0; 12],
            |_| {
                seen += 1;
                Ok(seen < 3)
            },
        )
        .unwrap();
        assert_eq!(seen, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
