//! Small Arrow files in the layout of ViLT's dataset files (`vqav2_*`, `nlvr2_*`,
//! `f30k_caption_karpathy_*`: the columns and types `write_vqa.py`, `write_nlvr2.py` and
//! `write_f30k_karpathy.py` write), made in process: a coloured square on a plain background
//! per image, with questions, statements and captions about its colour. They let the real-data
//! pipeline (readers, views, recipe, tables) run end to end without the datasets, in tests and
//! first trials; they are not a benchmark. The column builders and the IPC writer serve the
//! Arrow reader tests too.

use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ArrayBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{Field, Schema};
use image::{ImageFormat, Rgb, RgbImage};

use crate::{Error, Result};

const COLOURS: [(&str, [u8; 3]); 4] =
    [("red", [220, 30, 30]), ("green", [30, 200, 40]), ("blue", [30, 60, 220]), ("yellow", [230, 220, 30])];

/// A `w × h` PNG: a square of colour `c` on a grey background.
fn picture(c: usize, w: u32, h: u32) -> Vec<u8> {
    let side = w.min(h) / 2;
    let (x0, y0) = ((w - side) / 2, (h - side) / 2);
    let img = RgbImage::from_fn(w, h, |x, y| {
        if (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y) { Rgb(COLOURS[c].1) } else { Rgb([128; 3]) }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).expect("PNG encoding to memory");
    out.into_inner()
}

/// A record batch of named columns (every field nullable, as pandas-written files are).
///
/// # Errors
/// Columns of different lengths (arrow's message).
pub fn record_batch(columns: Vec<(&str, ArrayRef)>) -> std::result::Result<RecordBatch, String> {
    let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect())
        .map_err(|e| e.to_string())
}

/// Writes `batches` (one schema) as an Arrow IPC file.
///
/// # Errors
/// A file that cannot be written, or batches of another schema (named by the file).
pub fn write_ipc(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let first = batches.first().ok_or_else(|| Error::format(path, "no record batch to write"))?;
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = FileWriter::try_new(file, &first.schema()).map_err(|e| Error::format(path, e.to_string()))?;
    for b in batches {
        w.write(b).map_err(|e| Error::format(path, e.to_string()))?;
    }
    w.finish().map_err(|e| Error::format(path, e.to_string()))
}

fn write(path: &Path, columns: Vec<(&str, ArrayRef)>) -> Result<()> {
    write_ipc(path, &[record_batch(columns).map_err(|e| Error::format(path, e))?])
}

fn strings(v: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

/// A `list<T>` column, one list per row, `push` appending a value to the inner builder.
fn lists<T, B: ArrayBuilder>(
    rows: impl IntoIterator<Item = impl IntoIterator<Item = T>>,
    inner: B,
    push: impl Fn(&mut B, T),
) -> ArrayRef {
    let mut b = ListBuilder::new(inner);
    for row in rows {
        for v in row {
            push(b.values(), v);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// A `list<list<T>>` column (VQA's answers, labels and scores: per row, per question).
fn list_lists<T, B: ArrayBuilder>(
    rows: impl IntoIterator<Item = impl IntoIterator<Item = impl IntoIterator<Item = T>>>,
    inner: B,
    push: impl Fn(&mut B, T),
) -> ArrayRef {
    let mut b = ListBuilder::new(ListBuilder::new(inner));
    for row in rows {
        for list in row {
            for v in list {
                push(b.values().values(), v);
            }
            b.values().append(true);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// A `list<string>` column.
pub fn string_lists<S: AsRef<str>>(rows: impl IntoIterator<Item = impl IntoIterator<Item = S>>) -> ArrayRef {
    lists(rows, StringBuilder::new(), |b, s| b.append_value(s.as_ref()))
}

/// A `list<int64>` column.
pub fn int64_lists<T: Borrow<i64>>(rows: impl IntoIterator<Item = impl IntoIterator<Item = T>>) -> ArrayRef {
    lists(rows, Int64Builder::new(), |b, v| b.append_value(*v.borrow()))
}

/// A `list<list<string>>` column.
pub fn string_list_lists<S: AsRef<str>>(
    rows: impl IntoIterator<Item = impl IntoIterator<Item = impl IntoIterator<Item = S>>>,
) -> ArrayRef {
    list_lists(rows, StringBuilder::new(), |b, s| b.append_value(s.as_ref()))
}

/// A `list<list<int64>>` column.
pub fn int64_list_lists<T: Borrow<i64>>(
    rows: impl IntoIterator<Item = impl IntoIterator<Item = impl IntoIterator<Item = T>>>,
) -> ArrayRef {
    list_lists(rows, Int64Builder::new(), |b, v| b.append_value(*v.borrow()))
}

/// A `list<list<double>>` column.
pub fn f64_list_lists<T: Borrow<f64>>(
    rows: impl IntoIterator<Item = impl IntoIterator<Item = impl IntoIterator<Item = T>>>,
) -> ArrayRef {
    list_lists(rows, Float64Builder::new(), |b, v| b.append_value(*v.borrow()))
}

/// Writes the ten files (`vqav2_{train,trainable_val,rest_val,test-dev}`, `nlvr2_{train,dev,
/// test1}`, `f30k_caption_karpathy_{train,val,test}`) with `rows` rows each (two images of
/// `w × h` px per NLVR2 row) into `dir`; returns their paths. Deterministic.
///
/// # Errors
/// A file that cannot be written (named).
pub fn write_vilt_samples(dir: &Path, rows: usize, w: u32, h: u32) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths = vec![];
    let colour = |split: usize, r: usize| (r * 7 + split * 3 + r / 4) % COLOURS.len();
    for (s, split) in ["train", "trainable_val", "rest_val", "test-dev"].iter().enumerate() {
        let path = dir.join(format!("vqav2_{split}.arrow"));
        let test = *split == "test-dev";
        let cs: Vec<usize> = (0..rows).map(|r| colour(s, r)).collect();
        let images: Vec<Vec<u8>> = cs.iter().map(|&c| picture(c, w, h)).collect();
        let questions: Vec<Vec<String>> =
            cs.iter().map(|_| vec!["what colour is the shape ?".into(), "is there a shape ?".into()]).collect();
        let answers: Vec<Vec<Vec<String>>> = cs
            .iter()
            .map(|&c| if test { vec![] } else { vec![vec![COLOURS[c].0.to_string()], vec!["yes".to_string()]] })
            .collect();
        // Answer labels: the colours 0..4, "yes" 4.
        let labels: Vec<Vec<Vec<i64>>> =
            cs.iter().map(|&c| if test { vec![] } else { vec![vec![c as i64], vec![4]] }).collect();
        let scores: Vec<Vec<Vec<f64>>> =
            cs.iter().map(|_| if test { vec![] } else { vec![vec![1.0], vec![1.0]] }).collect();
        let qids: Vec<Vec<i64>> =
            (0..rows).map(|r| (0..2).map(|j| (s * 100_000 + r * 10 + j) as i64).collect()).collect();
        write(
            &path,
            vec![
                ("image", Arc::new(BinaryArray::from_vec(images.iter().map(Vec::as_slice).collect()))),
                ("questions", string_lists(&questions)),
                ("answers", string_list_lists(&answers)),
                ("answer_labels", int64_list_lists(&labels)),
                ("answer_scores", f64_list_lists(&scores)),
                (
                    "image_id",
                    Arc::new(Int64Array::from((0..rows as i64).map(|r| s as i64 * 1000 + r).collect::<Vec<_>>())),
                ),
                ("question_id", int64_lists(&qids)),
                ("split", strings(vec![split.to_string(); rows])),
            ],
        )?;
        paths.push(path);
    }
    for (s, split) in ["train", "dev", "test1"].iter().enumerate() {
        let path = dir.join(format!("nlvr2_{split}.arrow"));
        let pairs: Vec<(usize, usize)> = (0..rows).map(|r| (colour(s + 4, r), colour(s + 5, r * 3 + 1))).collect();
        let left: Vec<Vec<u8>> = pairs.iter().map(|p| picture(p.0, w, h)).collect();
        let right: Vec<Vec<u8>> = pairs.iter().map(|p| picture(p.1, w, h)).collect();
        let sentences: Vec<Vec<String>> = pairs
            .iter()
            .map(|&(a, b)| {
                vec![
                    format!("the left image has a {} shape", COLOURS[a].0),
                    format!("both images have a {} shape", COLOURS[b].0),
                ]
            })
            .collect();
        let answers: Vec<Vec<String>> = pairs
            .iter()
            .map(|&(a, b)| vec!["True".to_string(), if a == b { "True" } else { "False" }.to_string()])
            .collect();
        write(
            &path,
            vec![
                ("image_0", Arc::new(BinaryArray::from_vec(left.iter().map(Vec::as_slice).collect()))),
                ("image_1", Arc::new(BinaryArray::from_vec(right.iter().map(Vec::as_slice).collect()))),
                ("questions", string_lists(&sentences)),
                ("answers", string_lists(&answers)),
                ("identifier", strings((0..rows).map(|r| format!("{split}-{r}-0")).collect())),
            ],
        )?;
        paths.push(path);
    }
    for (s, split) in ["train", "val", "test"].iter().enumerate() {
        let path = dir.join(format!("f30k_caption_karpathy_{split}.arrow"));
        let cs: Vec<usize> = (0..rows).map(|r| colour(s + 8, r)).collect();
        let images: Vec<Vec<u8>> = cs.iter().map(|&c| picture(c, w, h)).collect();
        let captions: Vec<Vec<String>> = cs
            .iter()
            .map(|&c| {
                let n = COLOURS[c].0;
                vec![
                    format!("a {n} shape"),
                    format!("a single {n} shape"),
                    format!("the image has a {n} shape"),
                    format!("a {n} shape"),
                    format!("there is a {n} shape"),
                ]
            })
            .collect();
        write(
            &path,
            vec![
                ("image", Arc::new(BinaryArray::from_vec(images.iter().map(Vec::as_slice).collect()))),
                ("caption", string_lists(&captions)),
                ("image_id", strings((0..rows).map(|r| format!("{split}_{r}.jpg")).collect())),
                ("split", strings(vec![split.to_string(); rows])),
            ],
        )?;
        paths.push(path);
    }
    Ok(paths)
}
