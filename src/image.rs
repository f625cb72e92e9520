//! Digit images from files (PNG, JPEG, PGM), prepared as MNIST's are.
//!
//! MNIST digits are white ink on black, their ink scaled to fit a 20x20 box and placed in the
//! 28x28 image with the ink's centre of mass at the centre. [`mnist_like`] does the same to
//! any photo or drawing of a digit: grey, inverted when the background is light, cropped to
//! the ink, scaled, centred.

use std::path::Path;

use crate::error::{Error, Result};

/// A grey image, values in [0, 1], row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Grey {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

/// An image as it is stored, 8 bits a sample: grey (1 channel) or RGB (3), interleaved, rows
/// top to bottom; transparency already laid over white.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Picture {
    /// True when some pixel's red, green and blue differ.
    pub fn is_colour(&self) -> bool {
        self.channels == 3
            && self
                .data
                .chunks_exact(3)
                .any(|p| p[0] != p[1] || p[1] != p[2])
    }
}

/// Reads a PNG, JPEG or PGM file as a [`Picture`], in its own colours (grey or RGB).
pub fn load_picture(path: &Path) -> Result<Picture> {
    let bytes = crate::limits::read_regular(path)?;
    decode_picture(path, &bytes)
}

/// [`load_picture`] of a file's bytes; `path` names them in errors.
pub fn decode_picture(path: &Path, bytes: &[u8]) -> Result<Picture> {
    let bad = |what: String| Error::file(path, what);
    let picture = if bytes.starts_with(b"\x89PNG") {
        png_picture(bytes).map_err(|e| bad(format!("unreadable PNG: {e}")))?
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        use zune_jpeg::zune_core::colorspace::ColorSpace;
        let (width, height, data) = jpeg_samples(bytes, ColorSpace::RGB)
            .map_err(|e| bad(format!("unreadable JPEG: {e}")))?;
        Picture {
            width,
            height,
            channels: 3,
            data,
        }
    } else if bytes.starts_with(b"P5") || bytes.starts_with(b"P2") {
        let grey = pgm_grey(bytes).map_err(|e| bad(format!("unreadable PGM: {e}")))?;
        Picture {
            width: grey.width,
            height: grey.height,
            channels: 1,
            data: grey
                .pixels
                .iter()
                .map(|&v| (v * 255.0).round() as u8)
                .collect(),
        }
    } else {
        return Err(bad("not a PNG, JPEG or PGM image".into()));
    };
    if picture.width == 0 || picture.height == 0 {
        return Err(bad("the image is empty".into()));
    }
    Ok(picture)
}

/// An image file's bytes as a model's input `(C·H·W)`, values in [0, 1], as `backprop
/// predict` prepares it: for a digit model with one channel, [`mnist_like`] (grey, ink made
/// white, cropped, scaled into 20x20 and centred); for other classes resized as their data
/// set's images were ([`crate::data::folder::prepare`]). `path` names the bytes in errors.
pub fn model_input(path: &Path, bytes: &[u8], input: [usize; 3], digits: bool) -> Result<Vec<f32>> {
    let [c, h, w] = input;
    if digits && c == 1 {
        return Ok(mnist_like(&decode(path, bytes)?, h, w));
    }
    let picture = decode_picture(path, bytes)?;
    let prepared = crate::data::folder::prepare(&picture, (h, w), c);
    Ok(prepared.iter().map(|&b| b as f32 / 255.0).collect())
}

/// A PNG as grey or RGB, its alpha (if any) laid over white.
fn png_picture(bytes: &[u8]) -> std::result::Result<Picture, String> {
    let (width, height, samples, data) = png_samples(bytes)?;
    let over_white =
        |v: u8, a: u8| ((v as u32 * a as u32 + 255 * (255 - a as u32) + 127) / 255) as u8;
    let (channels, data) = match samples {
        1 | 3 => (samples, data),
        2 => (
            1,
            data.chunks_exact(2)
                .map(|p| over_white(p[0], p[1]))
                .collect(),
        ),
        _ => (
            3,
            data.chunks_exact(4)
                .flat_map(|p| [0, 1, 2].map(|c| over_white(p[c], p[3])))
                .collect(),
        ),
    };
    Ok(Picture {
        width,
        height,
        channels,
        data,
    })
}

/// Reads a PNG, JPEG or PGM (P2 or P5) file as grey; the format is told by its first bytes.
pub fn load(path: &Path) -> Result<Grey> {
    let bytes = crate::limits::read_regular(path)?;
    decode(path, &bytes)
}

/// [`load`] of a file's bytes; `path` names them in errors.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Grey> {
    let bad = |what: String| Error::file(path, what);
    let img = if bytes.starts_with(b"\x89PNG") {
        png_grey(bytes).map_err(|e| bad(format!("unreadable PNG: {e}")))?
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        jpeg_grey(bytes).map_err(|e| bad(format!("unreadable JPEG: {e}")))?
    } else if bytes.starts_with(b"P5") || bytes.starts_with(b"P2") {
        pgm_grey(bytes).map_err(|e| bad(format!("unreadable PGM: {e}")))?
    } else {
        return Err(bad("not a PNG, JPEG or PGM image".into()));
    };
    if img.width == 0 || img.height == 0 {
        return Err(bad("the image is empty".into()));
    }
    Ok(img)
}

/// A PNG's samples, 8 bits each: (width, height, samples a pixel (1 to 4), the samples).
fn png_samples(bytes: &[u8]) -> std::result::Result<(usize, usize, usize, Vec<u8>), String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let info = reader.info();
    crate::limits::check_pixels(info.width as u64, info.height as u64)?;
    let size = reader
        .output_buffer_size()
        .ok_or("the image is too large")?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let channels = frame.color_type.samples();
    buf.truncate(frame.buffer_size());
    if buf.len() < w * h * channels {
        return Err("pixel data is short".into());
    }
    buf.truncate(w * h * channels);
    Ok((w, h, channels, buf))
}

fn png_grey(bytes: &[u8]) -> std::result::Result<Grey, String> {
    let (w, h, channels, data) = png_samples(bytes)?;
    let pixels = data
        .chunks_exact(channels)
        .map(|p| {
            let grey = match channels {
                1 | 2 => p[0] as f32,
                _ => 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32,
            };
            // transparent pixels count as the background (white): ink is what is drawn
            let alpha = match channels {
                2 => p[1] as f32 / 255.0,
                4 => p[3] as f32 / 255.0,
                _ => 1.0,
            };
            (grey * alpha + 255.0 * (1.0 - alpha)) / 255.0
        })
        .collect::<Vec<f32>>();
    Ok(Grey {
        width: w,
        height: h,
        pixels,
    })
}

/// A JPEG decoded into `space` (Luma or RGB): (width, height, the samples).
fn jpeg_samples(
    bytes: &[u8],
    space: zune_jpeg::zune_core::colorspace::ColorSpace,
) -> std::result::Result<(usize, usize, Vec<u8>), String> {
    use zune_jpeg::zune_core::options::DecoderOptions;
    let options = DecoderOptions::default().jpeg_set_out_colorspace(space);
    let mut decoder =
        zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| format!("{e:?}"))?;
    let info = decoder.info().ok_or("no image information")?;
    crate::limits::check_pixels(info.width as u64, info.height as u64)?;
    let mut data = decoder.decode().map_err(|e| format!("{e:?}"))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let n = w * h * space.num_components();
    if data.len() < n {
        return Err("pixel data is short".into());
    }
    data.truncate(n);
    Ok((w, h, data))
}

fn jpeg_grey(bytes: &[u8]) -> std::result::Result<Grey, String> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    let (w, h, data) = jpeg_samples(bytes, ColorSpace::Luma)?;
    Ok(Grey {
        width: w,
        height: h,
        pixels: data.iter().map(|&v| v as f32 / 255.0).collect(),
    })
}

fn pgm_grey(bytes: &[u8]) -> std::result::Result<Grey, String> {
    // header: magic, width, height, maxval as whitespace-separated words (# comments)
    let mut pos = 2;
    let mut words = Vec::new();
    while words.len() < 3 {
        while pos < bytes.len() && (bytes[pos].is_ascii_whitespace() || bytes[pos] == b'#') {
            if bytes[pos] == b'#' {
                while pos < bytes.len() && bytes[pos] != b'\n' {
                    pos += 1;
                }
            } else {
                pos += 1;
            }
        }
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let word = std::str::from_utf8(&bytes[start..pos]).unwrap_or("");
        words.push(
            word.parse::<usize>()
                .map_err(|_| "malformed header".to_string())?,
        );
    }
    let (w, h, max) = (words[0], words[1], words[2]);
    if max == 0 || max > 65535 {
        return Err("invalid header values".into());
    }
    crate::limits::check_pixels(w as u64, h as u64)?;
    let n = w * h;
    let values: Vec<f32> = if bytes.starts_with(b"P5") {
        let data = &bytes[(pos + 1).min(bytes.len())..];
        let wide = max > 255;
        let need = n * if wide { 2 } else { 1 };
        if data.len() < need {
            return Err(format!("truncated: {} of {need} data bytes", data.len()));
        }
        if wide {
            data.chunks_exact(2)
                .take(n)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as f32)
                .collect()
        } else {
            data[..n].iter().map(|&v| v as f32).collect()
        }
    } else {
        let text = std::str::from_utf8(&bytes[pos..]).map_err(|_| "not ASCII".to_string())?;
        let v = text
            .split_ascii_whitespace()
            .take(n)
            .map(|t| t.parse::<f32>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| "malformed pixel value".to_string())?;
        if v.len() < n {
            return Err(format!("truncated: {} of {n} values", v.len()));
        }
        v
    };
    Ok(Grey {
        width: w,
        height: h,
        pixels: values
            .iter()
            .map(|&v| (v / max as f32).clamp(0.0, 1.0))
            .collect(),
    })
}

/// Bilinear sample of `img` at (x, y) in pixel units (pixel centres at +0.5); outside is 0.
fn sample(img: &Grey, x: f32, y: f32) -> f32 {
    let (fx, fy) = (x - 0.5, y - 0.5);
    let (x0, y0) = (fx.floor(), fy.floor());
    let (tx, ty) = (fx - x0, fy - y0);
    let at = |xi: f32, yi: f32| {
        if xi < 0.0 || yi < 0.0 || xi as usize >= img.width || yi as usize >= img.height {
            0.0
        } else {
            img.pixels[yi as usize * img.width + xi as usize]
        }
    };
    let top = at(x0, y0) * (1.0 - tx) + at(x0 + 1.0, y0) * tx;
    let bottom = at(x0, y0 + 1.0) * (1.0 - tx) + at(x0 + 1.0, y0 + 1.0) * tx;
    top * (1.0 - ty) + bottom * ty
}

/// `img` as an MNIST sample of `height x width` (28x28 for MNIST), values in [0, 1]:
/// inverted if the background (the border's mean) is light; the ink's bounding box scaled,
/// keeping its aspect, to fit 20/28 of the size; the ink's centre of mass put at the centre.
pub fn mnist_like(img: &Grey, height: usize, width: usize) -> Vec<f32> {
    let inked = ink(img);
    let Some((x0, y0, x1, y1)) = ink_box(&inked) else {
        return vec![0.0; height * width]; // no ink: a blank image
    };
    // scale the box to fit 20/28 of the target, keeping the aspect
    let (bw, bh) = ((x1 - x0) as f32, (y1 - y0) as f32);
    let fit = (20.0 / 28.0) * (height.min(width) as f32);
    let scale = fit / bw.max(bh);
    let (sw, sh) = (
        (bw * scale).round().max(1.0) as usize,
        (bh * scale).round().max(1.0) as usize,
    );
    let small = downscale(&inked, (x0, y0), scale, (sw, sh));
    centred(&small, (sw, sh), (height, width))
}

/// The image as ink: inverted if the background (the border's mean) is light, the
/// background level 0 and full ink 1.
fn ink(img: &Grey) -> Grey {
    let (w, h) = (img.width, img.height);
    let border: Vec<f32> = (0..w)
        .flat_map(|x| [img.pixels[x], img.pixels[(h - 1) * w + x]])
        .chain((0..h).flat_map(|y| [img.pixels[y * w], img.pixels[y * w + w - 1]]))
        .collect();
    let background = border.iter().sum::<f32>() / border.len() as f32;
    let bg = background.min(1.0 - background);
    let pixels = img
        .pixels
        .iter()
        .map(|&v| {
            let v = if background > 0.5 { 1.0 - v } else { v };
            ((v - bg) / (1.0 - bg).max(1e-6)).clamp(0.0, 1.0)
        })
        .collect();
    Grey {
        width: w,
        height: h,
        pixels,
    }
}

/// The bounding box (x0, y0, x1, y1) of the pixels above 0.2, or None for no ink.
fn ink_box(inked: &Grey) -> Option<(usize, usize, usize, usize)> {
    let (w, h) = (inked.width, inked.height);
    let threshold = 0.2;
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if inked.pixels[y * w + x] > threshold {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    (x0 < x1).then_some((x0, y0, x1, y1))
}

/// The ink from `(x0, y0)` scaled by `scale` into an `sw x sh` image: area-averaged
/// (supersampled 4x4 bilinear).
fn downscale(
    inked: &Grey,
    (x0, y0): (usize, usize),
    scale: f32,
    (sw, sh): (usize, usize),
) -> Vec<f32> {
    let mut small = vec![0f32; sw * sh];
    let sub = 4;
    for sy in 0..sh {
        for sx in 0..sw {
            let mut acc = 0.0;
            for j in 0..sub {
                for i in 0..sub {
                    let u = (sx as f32 + (i as f32 + 0.5) / sub as f32) / scale + x0 as f32;
                    let v = (sy as f32 + (j as f32 + 0.5) / sub as f32) / scale + y0 as f32;
                    acc += sample(inked, u, v);
                }
            }
            small[sy * sw + sx] = acc / (sub * sub) as f32;
        }
    }
    small
}

/// `small` (sw x sh) placed in a `height x width` image with its centre of mass at the
/// centre.
fn centred(small: &[f32], (sw, sh): (usize, usize), (height, width): (usize, usize)) -> Vec<f32> {
    let mass: f32 = small.iter().sum();
    let (mut cx, mut cy) = (sw as f32 / 2.0, sh as f32 / 2.0);
    if mass > 0.0 {
        let moment = |coord: &dyn Fn(usize) -> f32| {
            small
                .iter()
                .enumerate()
                .map(|(k, v)| v * coord(k))
                .sum::<f32>()
                / mass
        };
        cx = moment(&|k| (k % sw) as f32 + 0.5);
        cy = moment(&|k| (k / sw) as f32 + 0.5);
    }
    let (ox, oy) = (
        (width as f32 / 2.0 - cx).round() as i64,
        (height as f32 / 2.0 - cy).round() as i64,
    );
    let mut out = vec![0f32; height * width];
    for sy in 0..sh {
        for sx in 0..sw {
            let (tx, ty) = (sx as i64 + ox, sy as i64 + oy);
            if tx >= 0 && ty >= 0 && (tx as usize) < width && (ty as usize) < height {
                out[ty as usize * width + tx as usize] = small[sy * sw + sx];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dark_stroke_on_white_becomes_a_centred_white_stroke_on_black() {
        // a 60x40 white image with a black vertical bar near the left edge
        let (w, h) = (60, 40);
        let pixels = (0..w * h)
            .map(|k| {
                let (x, y) = (k % w, k / w);
                if (5..9).contains(&x) && (5..35).contains(&y) {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        let out = mnist_like(
            &Grey {
                width: w,
                height: h,
                pixels,
            },
            28,
            28,
        );
        // the background is black, the ink white, 20 rows tall, centred
        let rows: Vec<usize> = (0..28)
            .filter(|y| (0..28).any(|x| out[y * 28 + x] > 0.5))
            .collect();
        assert_eq!(rows.len(), 20, "{rows:?}");
        assert_eq!((rows[0], rows[19]), (4, 23));
        let cols: Vec<usize> = (0..28)
            .filter(|x| (0..28).any(|y| out[y * 28 + x] > 0.5))
            .collect();
        let mid = (cols[0] + cols[cols.len() - 1]) as f32 / 2.0;
        assert!((mid - 13.5).abs() <= 1.0, "{cols:?}");
        assert_eq!(out[0], 0.0);
    }

    #[test]
    fn pgm_both_kinds_and_bad_headers() {
        let p2 = b"P2\n# a comment\n2 2\n255\n0 255\n128 64\n";
        let g = pgm_grey(p2).unwrap();
        assert_eq!((g.width, g.height), (2, 2));
        assert_eq!(g.pixels[1], 1.0);
        let mut p5 = b"P5 2 1 255\n".to_vec();
        p5.extend([0, 255]);
        assert_eq!(pgm_grey(&p5).unwrap().pixels, vec![0.0, 1.0]);
        assert!(pgm_grey(b"P5 2 2 255\n\x00").is_err());
        assert!(pgm_grey(b"P5 x 2 255\n").is_err());
        assert!(pgm_grey(b"P5 2 2 0\n").is_err());
    }
}
