//! The pictures a run leaves behind, drawn with plotters in the font built
//! into the binary (DejaVu Sans, data/fonts): learning curves, a confusion
//! matrix with person names, a ROC curve on a log false-accept axis. Each
//! takes plain numbers and gives an RGB image, so callers decide where it
//! goes.

use anyhow::{anyhow, Result};
use image::RgbImage;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::sync::Once;

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
static FONT: &[u8] = include_bytes!("../data/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);
const BEST: RGBColor = RGBColor(44, 160, 44);
/// Verification sets' accuracies, in turn.
const SETS: [RGBColor; 4] =
    [RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75), RGBColor(23, 190, 207)];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font, checked by a test. (The
        // browser build draws no plots: plotters has no font registry there.)
        #[cfg(not(target_arch = "wasm32"))]
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Runs `draw` on a white `w` x `h` canvas and returns the picture.
fn canvas(w: u32, h: u32, draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<()>) -> Result<RgbImage> {
    register_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(err)?;
    }
    RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("plot: buffer size"))
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

/// A legend entry's mark: a short line in the series' style.
fn mark(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style)
}

/// The legend of `chart`'s labelled series, boxed, at `position`.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(err)
}

/// One run's learning curves, epoch by epoch (epochs count from 1).
pub struct Curves<'a> {
    pub train_loss: &'a [f64],
    pub val_loss: &'a [f64],
    pub train_accuracy: &'a [f64],
    pub val_accuracy: &'a [f64],
    /// Verification sets' accuracies (`train --val-bin`), by name.
    pub sets: &'a [(String, Vec<f64>)],
    /// The epoch of the kept checkpoint (lowest validation loss), 0 = none.
    pub best_epoch: usize,
}

/// Loss (left) and accuracy (right) against the epoch, training and
/// validation, with the best epoch marked.
pub fn curves(c: &Curves) -> Result<RgbImage> {
    canvas(1000, 400, |root| {
        let (left, right) = root.split_horizontally(500);
        let finite = |v: &&f64| v.is_finite();
        let top = c.train_loss.iter().chain(c.val_loss).filter(finite).fold(0.0f64, |a, &b| a.max(b));
        let loss = [(c.train_loss, TRAIN, "training"), (c.val_loss, VAL, "validation")];
        panel(&left, "Loss", "loss", &loss, top.max(1e-6), c.best_epoch)?;
        let mut accuracy = vec![(c.train_accuracy, TRAIN, "training"), (c.val_accuracy, VAL, "validation")];
        for (i, (name, v)) in c.sets.iter().enumerate() {
            accuracy.push((v, SETS[i % SETS.len()], name));
        }
        panel(&right, "Accuracy", "accuracy", &accuracy, 1.0, c.best_epoch)
    })
}

/// One panel, values from 0 to `top`; the legend sits in a band above
/// `top`, clear of the curves.
fn panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    y_desc: &str,
    series: &[(&[f64], RGBColor, &str)],
    top: f64,
    best: usize,
) -> Result<()> {
    let epochs = series.iter().map(|s| s.0.len()).max().unwrap_or(0).max(1);
    let y_max = top * 1.3;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5f64..epochs as f64 + 0.5, 0.0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(epochs.min(12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| if *y > top * 1.0001 { String::new() } else { format!("{y:.1}") })
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .draw()
        .map_err(err)?;
    for &(values, colour, name) in series {
        let pts: Vec<(f64, f64)> =
            values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| ((i + 1) as f64, v)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(mark(colour.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled()))).map_err(err)?;
    }
    if best > 0 {
        let x = best as f64;
        chart
            .draw_series(DashedLineSeries::new(vec![(x, 0.0), (x, top)], 6, 4, BEST.stroke_width(2)))
            .map_err(err)?
            .label(format!("best epoch ({best})"))
            .legend(mark(BEST.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperMiddle)
}

/// Rows are true people, columns predicted; a cell's darkness is its share
/// of the row (blue on the diagonal, red off it), with its count written
/// where there is room; people named on both axes.
pub fn confusion(names: &[String], matrix: &[Vec<usize>]) -> Result<RgbImage> {
    let n = matrix.len().max(1);
    let cell = (720 / n as u32).clamp(12, 48);
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(1).min(24) as u32;
    let label_px = (cell.min(16) * 6 / 10).max(8);
    let margin = 20 + longest * label_px * 6 / 10;
    let (w, h) = (margin + cell * n as u32 + 20, margin + cell * n as u32 + 60);
    canvas(w, h, |root| {
        let title = (FAMILY, 20).into_font();
        root.draw(&Text::new("Confusion matrix (rows: true person, columns: predicted)", (10, 8), title))
            .map_err(err)?;
        let (x0, y0) = (margin as i32, (margin + 40) as i32);
        let c = cell as i32;
        for (r, row) in matrix.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (k, &v) in row.iter().enumerate() {
                let share = if total > 0 { v as f64 / total as f64 } else { 0.0 };
                let shade = (255.0 * (1.0 - share)) as u8;
                let colour = if r == k { RGBColor(shade, shade, 255) } else { RGBColor(255, shade, shade) };
                let (x, y) = (x0 + k as i32 * c, y0 + r as i32 * c);
                root.draw(&Rectangle::new([(x, y), (x + c, y + c)], colour.filled())).map_err(err)?;
                root.draw(&Rectangle::new([(x, y), (x + c, y + c)], RGBColor(230, 230, 230))).map_err(err)?;
                if v > 0 && cell >= 20 {
                    let ink = if share > 0.5 { WHITE } else { BLACK };
                    let style =
                        (FAMILY, (cell / 2) as f64).into_font().color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                    root.draw(&Text::new(v.to_string(), (x + c / 2, y + c / 2), style)).map_err(err)?;
                }
            }
        }
        let small = (FAMILY, label_px as f64).into_font();
        for (i, name) in names.iter().enumerate().take(n) {
            let name: String = name.chars().take(24).collect();
            let mid = i as i32 * c + c / 2;
            let row_label = small.clone().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(name.clone(), (x0 - 4, y0 + mid), row_label)).map_err(err)?;
            let col_label =
                small.clone().transform(FontTransform::Rotate270).color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
            root.draw(&Text::new(name, (x0 + mid, y0 - 4), col_label)).map_err(err)?;
        }
        Ok(())
    })
}

/// A verification ROC: true accept rate against false accept rate on a log
/// axis (0 is drawn at the axis' left end), AUC and EER in the title.
pub fn roc(points: &[(f64, f64)], different_pairs: usize, auc: f64, eer: f64) -> Result<RgbImage> {
    // The smallest non-zero FAR the pairs can show is 1/different.
    let floor = 10f64.powf((1.0 / different_pairs.max(1) as f64).log10().floor()).clamp(1e-6, 1e-1);
    canvas(560, 520, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("ROC: AUC {auc:.4}, EER {eer:.4}"), (FAMILY, 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d((floor..1.0f64).log_scale(), 0.0f64..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("false accept rate (log)")
            .y_desc("true accept rate")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()
            .map_err(err)?;
        let pts: Vec<(f64, f64)> = points.iter().map(|&(far, tar)| (far.max(floor), tar)).collect();
        let chance: Vec<(f64, f64)> =
            (0..=60).map(|i| floor * (1.0 / floor).powf(i as f64 / 60.0)).map(|x| (x, x)).collect();
        chart
            .draw_series(LineSeries::new(chance, RGBColor(180, 180, 180).stroke_width(1)))
            .map_err(err)?
            .label("chance")
            .legend(mark(RGBColor(180, 180, 180).into()));
        chart
            .draw_series(LineSeries::new(pts, TRAIN.stroke_width(2)))
            .map_err(err)?
            .label("model")
            .legend(mark(TRAIN.stroke_width(2)));
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The font parses, and text is drawn: the anti-aliased glyphs leave
    /// many grey pixels, which the coloured lines and white fill do not.
    #[test]
    fn plots_carry_text() {
        assert!(plotters::style::register_font("check", FontStyle::Normal, FONT).is_ok(), "the font parses");
        let v = [1.0, 0.6, 0.4];
        let a = [0.3, 0.6, 0.8];
        let img = curves(&Curves {
            train_loss: &v,
            val_loss: &v,
            train_accuracy: &a,
            val_accuracy: &a,
            sets: &[],
            best_epoch: 3,
        })
        .unwrap();
        let greys = img.pixels().filter(|p| p[0] == p[1] && p[1] == p[2] && p[0] > 30 && p[0] < 220).count();
        assert!(greys > 500, "only {greys} grey pixels: no text?");
    }
}
