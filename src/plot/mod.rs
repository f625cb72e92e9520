//! Learning curves and confusion matrices as SVG and PNG, with no plotting library.
//!
//! A chart draws itself once through [`Draw`] (lines, rectangles, text); [`Svg`] writes
//! those as SVG elements and [`Raster`] paints them into pixels for a PNG (text from a small
//! built-in bitmap font, [`font`]). Both files show the same picture.

pub mod font;

use std::fmt::Write as _;

/// An RGB colour.
pub type Rgb = [u8; 3];

pub const BLUE: Rgb = [31, 119, 180];
pub const ORANGE: Rgb = [255, 127, 14];
pub const GREEN: Rgb = [44, 160, 44];
pub const GREY: Rgb = [200, 200, 200];
pub const BLACK: Rgb = [0, 0, 0];
pub const WHITE: Rgb = [255, 255, 255];

/// Where a text's x coordinate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// What a chart is drawn with; coordinates in pixels, y downwards.
pub trait Draw {
    fn line(&mut self, from: (f64, f64), to: (f64, f64), color: Rgb, width: f64);
    fn rect(&mut self, at: (f64, f64), size: (f64, f64), fill: Rgb);
    /// Text with its baseline's left, middle or right end at `at`.
    fn text(&mut self, at: (f64, f64), text: &str, color: Rgb, anchor: Anchor);
}

fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG document being written.
pub struct Svg {
    body: String,
    size: (u32, u32),
}

impl Svg {
    pub fn new(width: u32, height: u32) -> Svg {
        let mut svg = Svg {
            body: String::new(),
            size: (width, height),
        };
        svg.rect((0.0, 0.0), (width as f64, height as f64), WHITE);
        svg
    }

    /// The finished document.
    pub fn finish(self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"DejaVu Sans Mono, monospace\" font-size=\"12\">\n{}</svg>\n",
            self.body,
            w = self.size.0,
            h = self.size.1
        )
    }
}

impl Draw for Svg {
    fn line(&mut self, from: (f64, f64), to: (f64, f64), color: Rgb, width: f64) {
        let _ = writeln!(
            self.body,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\" stroke-width=\"{width}\"/>",
            from.0,
            from.1,
            to.0,
            to.1,
            hex(color)
        );
    }

    fn rect(&mut self, at: (f64, f64), size: (f64, f64), fill: Rgb) {
        let _ = writeln!(
            self.body,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
            at.0,
            at.1,
            size.0,
            size.1,
            hex(fill)
        );
    }

    fn text(&mut self, at: (f64, f64), text: &str, color: Rgb, anchor: Anchor) {
        let anchor = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let _ = writeln!(
            self.body,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            at.0,
            at.1,
            hex(color),
            escape(text)
        );
    }
}

/// An RGB image being painted.
pub struct Raster {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB, 3 bytes a pixel.
    pub pixels: Vec<u8>,
}

impl Raster {
    pub fn new(width: usize, height: usize) -> Raster {
        Raster {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    fn put(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    /// The image as a PNG file.
    pub fn png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().expect("writing to memory");
            w.write_image_data(&self.pixels).expect("writing to memory");
        }
        out
    }
}

impl Draw for Raster {
    fn line(&mut self, from: (f64, f64), to: (f64, f64), color: Rgb, width: f64) {
        // a square pen of the line's width stamped along it, one step per pixel
        let steps = (to.0 - from.0)
            .abs()
            .max((to.1 - from.1).abs())
            .ceil()
            .max(1.0) as usize;
        let half = (width / 2.0).floor() as i64;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (
                (from.0 + t * (to.0 - from.0)).round() as i64,
                (from.1 + t * (to.1 - from.1)).round() as i64,
            );
            let pen = (width.round() as i64).max(1); // pixels across
            for dy in 0..pen {
                for dx in 0..pen {
                    self.put(x + dx - half, y + dy - half, color);
                }
            }
        }
    }

    fn rect(&mut self, at: (f64, f64), size: (f64, f64), fill: Rgb) {
        let (x0, y0) = (at.0.round() as i64, at.1.round() as i64);
        let (x1, y1) = (
            (at.0 + size.0).round() as i64,
            (at.1 + size.1).round() as i64,
        );
        for y in y0..y1 {
            for x in x0..x1 {
                self.put(x, y, fill);
            }
        }
    }

    fn text(&mut self, at: (f64, f64), text: &str, color: Rgb, anchor: Anchor) {
        let width = (text.chars().count() * font::WIDTH) as f64;
        let left = match anchor {
            Anchor::Start => at.0,
            Anchor::Middle => at.0 - width / 2.0,
            Anchor::End => at.0 - width,
        }
        .round() as i64;
        // the font's baseline is 3 rows above its cell's bottom
        let top = at.1.round() as i64 - (font::HEIGHT as i64 - 3);
        for (i, ch) in text.chars().enumerate() {
            let code = ch as usize;
            let glyph = if (32..127).contains(&code) {
                &font::GLYPHS[code - 32]
            } else {
                &font::GLYPHS['?' as usize - 32]
            };
            for (y, row) in glyph.iter().enumerate() {
                for x in 0..font::WIDTH {
                    if row >> x & 1 == 1 {
                        let px = left + (i * font::WIDTH + x) as i64;
                        self.put(px, top + y as i64, color);
                    }
                }
            }
        }
    }
}

/// One curve of a line chart.
pub struct Series {
    pub name: String,
    pub color: Rgb,
    pub points: Vec<(f64, f64)>,
}

/// A line chart: axes with ticks, one polyline per series, a legend.
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

pub const CHART_SIZE: (u32, u32) = (640, 400);

/// About five round tick values covering `lo..hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..)
        .map(|i| first + i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .collect()
}

fn label(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

impl LineChart {
    /// Draws the chart on a canvas of [`CHART_SIZE`].
    pub fn draw(&self, d: &mut dyn Draw) {
        let (w, h) = (CHART_SIZE.0 as f64, CHART_SIZE.1 as f64);
        let (left, right, top, bottom) = (70.0, w - 20.0, 40.0, h - 50.0);
        let all = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in all.filter(|(x, y)| x.is_finite() && y.is_finite()) {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        (y0, y1) = (y0 - pad, y1 + pad);
        let px = |x: f64| left + (x - x0) / (x1 - x0) * (right - left);
        let py = |y: f64| bottom - (y - y0) / (y1 - y0) * (bottom - top);

        d.text((w / 2.0, 24.0), &self.title, BLACK, Anchor::Middle);
        for t in ticks(y0, y1) {
            d.line((left, py(t)), (right, py(t)), GREY, 1.0);
            d.text((left - 6.0, py(t) + 4.0), &label(t), BLACK, Anchor::End);
        }
        // whole-number x values (epochs) get whole-number ticks
        let whole = self
            .series
            .iter()
            .flat_map(|s| &s.points)
            .all(|p| p.0.fract() == 0.0);
        for t in ticks(x0, x1)
            .into_iter()
            .filter(|t| !whole || t.fract() == 0.0)
        {
            d.line((px(t), bottom), (px(t), bottom + 5.0), BLACK, 1.0);
            d.text((px(t), bottom + 18.0), &label(t), BLACK, Anchor::Middle);
        }
        d.line((left, top), (left, bottom), BLACK, 1.0);
        d.line((left, bottom), (right, bottom), BLACK, 1.0);
        d.text((w / 2.0, h - 12.0), &self.x_label, BLACK, Anchor::Middle);
        d.text((8.0, top - 12.0), &self.y_label, BLACK, Anchor::Start);
        for (k, s) in self.series.iter().enumerate() {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| (px(x), py(y)))
                .collect();
            for pair in pts.windows(2) {
                d.line(pair[0], pair[1], s.color, 2.0);
            }
            for &p in &pts {
                d.rect((p.0 - 2.0, p.1 - 2.0), (5.0, 5.0), s.color);
            }
            // legend, top right
            let y = top + 14.0 + 18.0 * k as f64;
            d.line(
                (right - 150.0, y - 4.0),
                (right - 125.0, y - 4.0),
                s.color,
                2.0,
            );
            d.text((right - 118.0, y), &s.name, BLACK, Anchor::Start);
        }
    }
}

/// A confusion matrix: one cell per (true, predicted) pair, shaded by its share of the true
/// class, with its count.
pub struct Heatmap {
    pub title: String,
    /// The classes' names, in label order (`0`, `1`, ... for digits; empty: the indices).
    pub labels: Vec<String>,
    /// `counts[t][p]`.
    pub counts: Vec<Vec<usize>>,
}

pub const HEATMAP_SIZE: (u32, u32) = (520, 520);

impl Heatmap {
    /// Draws the matrix on a canvas of [`HEATMAP_SIZE`].
    pub fn draw(&self, d: &mut dyn Draw) {
        let k = self.counts.len().max(1);
        // rows named `Trouser 1` when the classes have names; columns by their index
        let row_label = |t: usize| match self.labels.get(t) {
            Some(name) if *name != t.to_string() => format!("{name} {t}"),
            _ => t.to_string(),
        };
        let widest = (0..k).map(|t| row_label(t).len()).max().unwrap_or(1);
        let left = (widest * font::WIDTH) as f64 + 20.0;
        let left = left.max(80.0);
        let top = 70.0;
        let cell = (HEATMAP_SIZE.0 as f64 - left - 20.0) / k as f64;
        d.text(
            (HEATMAP_SIZE.0 as f64 / 2.0, 24.0),
            &self.title,
            BLACK,
            Anchor::Middle,
        );
        d.text(
            (left + cell * k as f64 / 2.0, top - 22.0),
            "predicted",
            BLACK,
            Anchor::Middle,
        );
        d.text((8.0, top - 8.0), "true", BLACK, Anchor::Start);
        for (t, row) in self.counts.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            let y = top + t as f64 * cell;
            d.text(
                (left - 8.0, y + cell / 2.0 + 4.0),
                &row_label(t),
                BLACK,
                Anchor::End,
            );
            for (p, &n) in row.iter().enumerate() {
                let x = left + p as f64 * cell;
                let share = n as f64 / total;
                // white (0) to dark blue (1); a square root so that small errors show
                let s = share.sqrt();
                let c = |hi: f64, lo: f64| (hi + (lo - hi) * s).round() as u8;
                let fill = [c(255.0, 8.0), c(255.0, 48.0), c(255.0, 107.0)];
                d.rect((x, y), (cell - 1.0, cell - 1.0), fill);
                let ink = if s > 0.5 { WHITE } else { BLACK };
                d.text(
                    (x + cell / 2.0, y + cell / 2.0 + 4.0),
                    &n.to_string(),
                    ink,
                    Anchor::Middle,
                );
            }
        }
        for p in 0..k {
            d.text(
                (left + (p as f64 + 0.5) * cell, top - 6.0),
                &p.to_string(),
                BLACK,
                Anchor::Middle,
            );
        }
    }
}

/// The SVG and PNG of a line chart.
pub fn render_chart(chart: &LineChart) -> (String, Vec<u8>) {
    let mut svg = Svg::new(CHART_SIZE.0, CHART_SIZE.1);
    chart.draw(&mut svg);
    let mut raster = Raster::new(CHART_SIZE.0 as usize, CHART_SIZE.1 as usize);
    chart.draw(&mut raster);
    (svg.finish(), raster.png())
}

/// The SVG and PNG of a confusion matrix.
pub fn render_heatmap(map: &Heatmap) -> (String, Vec<u8>) {
    let mut svg = Svg::new(HEATMAP_SIZE.0, HEATMAP_SIZE.1);
    map.draw(&mut svg);
    let mut raster = Raster::new(HEATMAP_SIZE.0 as usize, HEATMAP_SIZE.1 as usize);
    map.draw(&mut raster);
    (svg.finish(), raster.png())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 1.0),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let t = ticks(0.93, 0.99);
        assert!(t.len() >= 3 && t[0] >= 0.93 && *t.last().unwrap() <= 0.99 + 1e-12);
    }

    #[test]
    fn text_is_escaped_in_svg() {
        let mut svg = Svg::new(10, 10);
        svg.text((1.0, 1.0), "a<b & c", BLACK, Anchor::Start);
        assert!(svg.finish().contains("a&lt;b &amp; c"));
    }
}
