//! Readers for the Apache Arrow IPC files of ViLT and METER: VQAv2, NLVR2 and Flickr30K.
//!
//! # The files
//!
//! ViLT's writers (`dandelin/ViLT`, `vilt/utils/write_{vqa,nlvr2,f30k_karpathy}.py`; METER reuses
//! them) build a pandas frame with one row per image (or image pair), convert it with
//! `pa.Table.from_pandas` and write it with `pa.RecordBatchFileWriter`: an Arrow IPC **file**
//! (magic `ARROW1` at both ends, not an IPC stream), uncompressed, that may hold several record
//! batches. Images are the original encoded bytes (JPEG for COCO and Flickr30K, PNG for NLVR2).
//!
//! | reader | files | columns read |
//! |---|---|---|
//! | [`VqaArrow`] | `vqav2_{train,val,trainable_val,rest_val,test,test-dev}.arrow` | `image` binary, `questions` list<string>, `answer_labels` list<list<int64>>, `answer_scores` list<list<double>>, `image_id` int64, `question_id` list<int64> (and `answers` list<list<string>> for [`VqaArrow::answer_vocab`]) |
//! | [`Nlvr2Arrow`] | `nlvr2_{train,dev,test1,balanced_*,unbalanced_*}.arrow` | `image_0`, `image_1` binary, `questions` list<string>, `answers` list<string> (`"True"` / `"False"`), `identifier` string |
//! | [`F30kArrow`] | `f30k_caption_karpathy_{train,val,test}.arrow` | `image` binary, `caption` list<string>, `image_id` string |
//!
//! Other columns (`split`, pandas' index columns) are ignored. Every reader takes a list of files
//! and concatenates them in order, as ViLT's `BaseDataset` concatenates the tables of its
//! `names` (VQA training = `vqav2_train` + `vqav2_trainable_val`; `vqav2_trainable_val` and
//! `vqav2_rest_val` are ordinary files, the split of `vqav2_val` made at write time).
//!
//! # Samples
//!
//! One sample per `(row, j)`: per question (VQA), sentence (NLVR2) or caption (Flickr30K), rows
//! in file order across record batches and files, `j` in list order, as the `index_mapper` of
//! ViLT's `vilt/datasets/base_dataset.py`. Flickr30K captions are de-duplicated per row first
//! (ViLT's `remove_duplicate=True` uses `list(set(texts))`, whose order is unspecified; here the
//! first occurrence is kept, in order); VQA and NLVR2 are not de-duplicated
//! (`remove_duplicate=False`). Targets: [`VlTarget::Answers`] (VQA soft scores, the
//! `(answer_labels, answer_scores)` pairs of the question; empty for the test files), a
//! [`VlTarget::Class`] (NLVR2: 1 for `"True"`, 0 for `"False"`) and [`VlTarget::Match`]
//! (Flickr30K: the image's row index over all files).
//!
//! # Text prefix
//!
//! [`VlArrowOptions::with_text_prefix`] prepends a literal to every text a reader returns (VQA
//! question, NLVR2 sentence, Flickr30K caption), with nothing in between. The APT code's ViLT
//! data prepends [`VILT_TEXT_PREFIX`] to the positive and evaluation texts, but not to the
//! negative captions drawn for retrieval training: [`F30kArrow::captions`] gives the raw captions
//! for drawing those. METER has no prefix (the default).
//!
//! # Images
//!
//! Image bytes are decoded with the `image` crate (format guessed from the content, PNG and JPEG
//! built in), converted to RGB8 (PIL's `.convert("RGB")`) and handed to the reader's
//! [`ArrowImageView`]: a [`Preprocess`] (a square resize and normalisation, what the batchers of
//! [`super::vl`] stack today) or any function of the image. ViLT's own view (`pixelbert`
//! transform: shorter side 384, longer side at most 639, sides floored to multiples of 32,
//! bicubic, mean/std 0.5; images zero-padded bottom/right to the largest in the batch) makes
//! images of different sizes: its resize is a custom view and the padding the batcher's job.
//! RandAugment (training) is not implemented; the augmentation seed is passed to the view.
//!
//! # Reading
//!
//! [`read_arrow_table`] memory-maps the file (ViLT reads it through `pa.memory_map`), as the
//! training files are several gigabytes: only the non-image columns are copied into memory when
//! a reader opens, images are read from the map when a sample is requested. Nested columns
//! follow two rules of pyarrow's pandas conversion: a null list reads as an empty list, and a list
//! column whose item type is `null` (pyarrow's type for a column of empty lists, e.g. the answer
//! columns of `vqav2_test`) matches any list type and reads as empty lists. Any other null
//! value is an error naming the file, column and row. Compressed IPC files (pyarrow's
//! `compression=` option, not used by the official writers) are rejected with arrow's error.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_buffer::Buffer;
use arrow_ipc::reader::{FileDecoder, read_footer_length};
use arrow_schema::{DataType, SchemaRef};
use image::RgbImage;

use super::Samples;
use super::preprocess::{Preprocess, preprocess_rgb};
use super::vl::{VlSample, VlTarget};
use crate::{Error, Result};

/// The literal the APT code's ViLT data puts before every question, NLVR2 sentence and positive
/// or evaluation caption (no space follows it): see [`VlArrowOptions::with_vilt_prefix`].
pub const VILT_TEXT_PREFIX: &str = "Does the images satisfy the description:";

/// The answer text [`VqaArrow::answer_vocab`] gives a label that no file names (ViLT's
/// `id2answer = defaultdict(lambda: "unknown")`).
pub const UNKNOWN_ANSWER: &str = "unknown";

/// Magic bytes at the start (padded to 8 bytes) and at the end of an Arrow IPC file.
const ARROW_MAGIC: &[u8; 6] = b"ARROW1";
/// Leading magic and padding (8 bytes) plus the trailer: footer length (4) and magic (6).
const MIN_FILE_LEN: usize = 18;
/// Largest VQA answer label [`VqaArrow::answer_vocab`] accepts (a guard against corrupt files
/// making it allocate a huge table; the real vocabulary has 3,129 answers).
const MAX_ANSWER_LABEL: usize = 1 << 24;

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

/// One Arrow IPC file: its schema and all of its record batches, rows numbered across batches
/// (row `r` of the table is row `r - start` of the batch that holds it).
#[derive(Clone)]
pub struct ArrowTable {
    path: PathBuf,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// First row of each batch, then the number of rows: `batches.len() + 1` entries.
    starts: Vec<usize>,
}

/// Opens the Arrow IPC file at `path` and reads the metadata of all of its record batches; the
/// data stays in a read-only memory map of the file (see [`ArrowTable::open`]).
///
/// # Errors
/// As [`ArrowTable::open`].
pub fn read_arrow_table(path: impl AsRef<Path>) -> Result<ArrowTable> {
    ArrowTable::open(path)
}

impl ArrowTable {
    /// Opens the Arrow IPC file at `path`, memory-mapped: record batches are decoded without
    /// copying their buffers (offsets and UTF-8 strings are validated, which reads them; binary
    /// values are not touched until asked for). The file must not be modified or truncated while
    /// the table or anything read from it (columns, readers) is alive.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened or mapped; [`Error::Format`] naming `path` if it
    /// is not an Arrow IPC file (no `ARROW1` magic at both ends, e.g. an IPC stream), or its
    /// footer or a record batch cannot be decoded.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < MIN_FILE_LEN as u64 {
            // Too short to map usefully (an empty file cannot be mapped): read it, and let the
            // magic check name the problem.
            let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            return Self::from_bytes(path, data);
        }
        // SAFETY: the map is read-only and only ever read through `&[u8]`. Mapping is unsafe
        // because another process could modify or truncate the file while it is mapped (which
        // would change or invalidate the bytes under us); the datasets are read-only inputs,
        // and `open` documents that they must stay unchanged while in use.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::from_buffer(path.to_path_buf(), Buffer::from(bytes::Bytes::from_owner(map)))
    }

    /// Decodes an Arrow IPC file held in memory; `path` only names it in errors.
    ///
    /// # Errors
    /// As [`ArrowTable::open`], without the I/O errors.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        Self::from_buffer(path.into(), Buffer::from_vec(bytes))
    }

    /// The IPC file layout (<https://arrow.apache.org/docs/format/Columnar.html#ipc-file-format>):
    /// `ARROW1`, padding, the stream of messages, the flatbuffer footer (schema and the blocks
    /// of the dictionaries and record batches), the footer length (int32) and `ARROW1`. The same
    /// steps as arrow-ipc's `FileReader`, on a buffer, so that batches are zero-copy slices of it.
    fn from_buffer(path: PathBuf, buffer: Buffer) -> Result<Self> {
        let len = buffer.len();
        if len < MIN_FILE_LEN || !buffer.starts_with(ARROW_MAGIC) || !buffer.ends_with(ARROW_MAGIC) {
            let hint = if buffer.starts_with(&[0xffu8; 4]) {
                "; it looks like an Arrow IPC stream (pyarrow's `ipc.new_stream`), while the \
                 datasets are IPC files (`pa.RecordBatchFileWriter`)"
            } else {
                ""
            };
            return Err(Error::format(
                path,
                format!("not an Arrow IPC file: no `ARROW1` magic at its start and end{hint}"),
            ));
        }
        let fail = |msg: String| Error::format(&path, msg);

        let trailer = <[u8; 10]>::try_from(&buffer[len - 10..]).expect("ten bytes");
        let footer_len = read_footer_length(trailer).map_err(|e| fail(format!("bad IPC file trailer: {e}")))?;
        if footer_len > len - MIN_FILE_LEN {
            return Err(fail(format!("IPC footer length {footer_len} does not fit in the file ({len} bytes)")));
        }
        // The footer is small: a copy keeps the flatbuffer verifier independent of where the
        // footer lies in the map.
        let footer_bytes = buffer[len - 10 - footer_len..len - 10].to_vec();
        let footer = arrow_ipc::root_as_footer(&footer_bytes)
            .map_err(|e| fail(format!("cannot parse the IPC footer: {e:?}")))?;
        let ipc_schema = footer.schema().ok_or_else(|| fail("the IPC footer has no schema".into()))?;
        if !ipc_schema.endianness().equals_to_target_endianness() {
            return Err(fail("the file's byte order differs from this machine's".into()));
        }
        let schema: SchemaRef =
            Arc::new(arrow_ipc::convert::try_fb_to_schema(ipc_schema).map_err(|e| fail(format!("bad schema: {e}")))?);

        let mut decoder = FileDecoder::new(Arc::clone(&schema), footer.version());
        if let Some(blocks) = footer.dictionaries() {
            for (d, block) in blocks.iter().enumerate() {
                let data = block_data(&buffer, block).map_err(|m| fail(format!("dictionary {d}: {m}")))?;
                decoder.read_dictionary(block, &data).map_err(|e| fail(format!("dictionary {d}: {e}")))?;
            }
        }
        let blocks = footer.recordBatches().ok_or_else(|| fail("the IPC footer lists no record batches".into()))?;
        let mut batches = Vec::with_capacity(blocks.len());
        for (b, block) in blocks.iter().enumerate() {
            let data = block_data(&buffer, block).map_err(|m| fail(format!("record batch {b}: {m}")))?;
            let batch = decoder.read_record_batch(block, &data).map_err(|e| fail(format!("record batch {b}: {e}")))?;
            if let Some(batch) = batch {
                batches.push(batch);
            }
        }

        let mut starts = Vec::with_capacity(batches.len() + 1);
        let mut rows = 0usize;
        starts.push(0);
        for batch in &batches {
            rows += batch.num_rows();
            starts.push(rows);
        }
        Ok(Self { path, schema, batches, starts })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema (with pyarrow's pandas metadata, if any).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Column names in schema order.
    pub fn column_names(&self) -> Vec<&str> {
        self.schema.fields().iter().map(|f| f.name().as_str()).collect()
    }

    /// Number of rows over all record batches.
    pub fn num_rows(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// The record batches in file order.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// `(batch, row within the batch)` of table row `row`, or `None` past the end.
    pub fn locate(&self, row: usize) -> Option<(usize, usize)> {
        locate(&self.starts, row)
    }

    /// The binary (or large binary) column `name`, read lazily ([`BinaryColumn::value`]).
    ///
    /// # Errors
    /// [`Error::Format`] naming the file and the column if it is missing or of another type.
    pub fn binary(&self, name: &str) -> Result<BinaryColumn> {
        let chunks = self.column(name, 0, Leaf::Binary)?;
        Ok(BinaryColumn { path: self.path.clone(), name: name.to_owned(), chunks, starts: self.starts.clone() })
    }

    /// The string (or large string) column `name`, one value per row.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file and the column if it is missing or of another type, and
    /// the row of a null value.
    pub fn strings(&self, name: &str) -> Result<Vec<String>> {
        self.scalars(name, Leaf::Utf8, read_utf8)
    }

    /// The int64 column `name`, one value per row.
    ///
    /// # Errors
    /// As [`ArrowTable::strings`].
    pub fn int64s(&self, name: &str) -> Result<Vec<i64>> {
        self.scalars(name, Leaf::Int64, read_i64)
    }

    /// The list<string> column `name` (lists and strings may be large), one list per row.
    ///
    /// # Errors
    /// As [`ArrowTable::strings`], naming the row and item of a null string.
    pub fn string_lists(&self, name: &str) -> Result<Vec<Vec<String>>> {
        self.lists(name, Leaf::Utf8, read_utf8)
    }

    /// The list<int64> column `name`, one list per row.
    ///
    /// # Errors
    /// As [`ArrowTable::string_lists`].
    pub fn int64_lists(&self, name: &str) -> Result<Vec<Vec<i64>>> {
        self.lists(name, Leaf::Int64, read_i64)
    }

    /// The list<list<string>> column `name`, one list of lists per row.
    ///
    /// # Errors
    /// As [`ArrowTable::string_lists`].
    pub fn string_list_lists(&self, name: &str) -> Result<Vec<Vec<Vec<String>>>> {
        self.list_lists(name, Leaf::Utf8, read_utf8)
    }

    /// The list<list<int64>> column `name`, one list of lists per row.
    ///
    /// # Errors
    /// As [`ArrowTable::string_lists`].
    pub fn int64_list_lists(&self, name: &str) -> Result<Vec<Vec<Vec<i64>>>> {
        self.list_lists(name, Leaf::Int64, read_i64)
    }

    /// The list<list<double>> column `name`, one list of lists per row.
    ///
    /// # Errors
    /// As [`ArrowTable::string_lists`].
    pub fn f64_list_lists(&self, name: &str) -> Result<Vec<Vec<Vec<f64>>>> {
        self.list_lists(name, Leaf::Float64, read_f64)
    }

    /// The chunks (one per batch) of column `name`, after checking that it exists and has the
    /// type `list<` × `depth` `leaf` `>` × `depth`.
    fn column(&self, name: &str, depth: usize, leaf: Leaf) -> Result<Vec<ArrayRef>> {
        let Ok(index) = self.schema.index_of(name) else {
            return Err(Error::format(
                &self.path,
                format!("no column '{name}' (the file has: {})", self.column_names().join(", ")),
            ));
        };
        let data_type = self.schema.field(index).data_type();
        if !shape_matches(data_type, depth, leaf) {
            return Err(Error::format(
                &self.path,
                format!(
                    "column '{name}' has type {data_type}, expected {} (large variants accepted)",
                    shape_name(depth, leaf)
                ),
            ));
        }
        Ok(self.batches.iter().map(|b| Arc::clone(b.column(index))).collect())
    }

    fn bad(&self, name: &str, row: usize, msg: impl fmt::Display) -> Error {
        Error::format(&self.path, format!("column '{name}', row {row}: {msg}"))
    }

    fn scalars<T>(&self, name: &str, leaf: Leaf, read: ReadFn<T>) -> Result<Vec<T>> {
        let chunks = self.column(name, 0, leaf)?;
        let mut out = Vec::with_capacity(self.num_rows());
        for (b, chunk) in chunks.iter().enumerate() {
            let array: &dyn Array = &**chunk;
            for i in 0..array.len() {
                out.push(leaf_value(array, i, read).map_err(|m| self.bad(name, self.starts[b] + i, m))?);
            }
        }
        Ok(out)
    }

    fn lists<T>(&self, name: &str, leaf: Leaf, read: ReadFn<T>) -> Result<Vec<Vec<T>>> {
        let chunks = self.column(name, 1, leaf)?;
        let mut out = Vec::with_capacity(self.num_rows());
        for (b, chunk) in chunks.iter().enumerate() {
            let array: &dyn Array = &**chunk;
            for i in 0..array.len() {
                let row = self.starts[b] + i;
                let (range, values) = list_slot(array, i).map_err(|m| self.bad(name, row, m))?;
                out.push(leaf_values(&**values, range, read).map_err(|m| self.bad(name, row, m))?);
            }
        }
        Ok(out)
    }

    fn list_lists<T>(&self, name: &str, leaf: Leaf, read: ReadFn<T>) -> Result<Vec<Vec<Vec<T>>>> {
        let chunks = self.column(name, 2, leaf)?;
        let mut out = Vec::with_capacity(self.num_rows());
        for (b, chunk) in chunks.iter().enumerate() {
            let array: &dyn Array = &**chunk;
            for i in 0..array.len() {
                let row = self.starts[b] + i;
                let (outer, inner) = list_slot(array, i).map_err(|m| self.bad(name, row, m))?;
                let inner: &dyn Array = &**inner;
                let mut lists = Vec::with_capacity(outer.len());
                for (j, k) in outer.enumerate() {
                    let at = |m: String| self.bad(name, row, format!("item {j}: {m}"));
                    let (range, values) = list_slot(inner, k).map_err(at)?;
                    lists.push(leaf_values(&**values, range, read).map_err(at)?);
                }
                out.push(lists);
            }
        }
        Ok(out)
    }
}

impl fmt::Debug for ArrowTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrowTable")
            .field("path", &self.path)
            .field("columns", &self.column_names())
            .field("rows", &self.num_rows())
            .field("batches", &self.batches.len())
            .finish()
    }
}

/// The bytes of one IPC block (message metadata then body), checked to lie inside the file.
fn block_data(buffer: &Buffer, block: &arrow_ipc::Block) -> std::result::Result<Buffer, String> {
    let parts =
        (usize::try_from(block.offset()), usize::try_from(block.metaDataLength()), usize::try_from(block.bodyLength()));
    if let (Ok(offset), Ok(meta), Ok(body)) = parts {
        let end = offset.checked_add(meta).and_then(|e| e.checked_add(body));
        // A message starts with at least its length prefix (4 or 8 bytes).
        if meta >= 8 && end.is_some_and(|end| end <= buffer.len()) {
            return Ok(buffer.slice_with_length(offset, meta + body));
        }
    }
    Err(format!(
        "block at offset {} ({} metadata and {} body bytes) does not fit in the file ({} bytes)",
        block.offset(),
        block.metaDataLength(),
        block.bodyLength(),
        buffer.len()
    ))
}

/// `(chunk, index in the chunk)` of `row` given the chunks' first rows and the total.
fn locate(starts: &[usize], row: usize) -> Option<(usize, usize)> {
    if row >= *starts.last()? {
        return None;
    }
    // The last chunk starting at or before `row` (empty chunks share their start with the next).
    let chunk = starts.partition_point(|&s| s <= row) - 1;
    Some((chunk, row - starts[chunk]))
}

/// The leaf types the accessors read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaf {
    Binary,
    Utf8,
    Int64,
    Float64,
}

impl Leaf {
    fn name(self) -> &'static str {
        match self {
            Leaf::Binary => "binary",
            Leaf::Utf8 => "string",
            Leaf::Int64 => "int64",
            Leaf::Float64 => "double",
        }
    }

    fn matches(self, data_type: &DataType) -> bool {
        matches!(
            (self, data_type),
            (Leaf::Binary, DataType::Binary | DataType::LargeBinary)
                | (Leaf::Utf8, DataType::Utf8 | DataType::LargeUtf8)
                | (Leaf::Int64, DataType::Int64)
                | (Leaf::Float64, DataType::Float64)
        )
    }
}

/// Whether `data_type` is `depth` nested lists (or large lists) of `leaf`; a list whose items
/// are of type `null` matches any list type (pyarrow's type for a column of empty lists).
fn shape_matches(data_type: &DataType, depth: usize, leaf: Leaf) -> bool {
    if depth == 0 {
        return leaf.matches(data_type);
    }
    match data_type {
        DataType::List(item) | DataType::LargeList(item) => {
            *item.data_type() == DataType::Null || shape_matches(item.data_type(), depth - 1, leaf)
        }
        _ => false,
    }
}

/// `list<list<int64>>` and the like.
fn shape_name(depth: usize, leaf: Leaf) -> String {
    format!("{}{}{}", "list<".repeat(depth), leaf.name(), ">".repeat(depth))
}

/// Reads element `k` of a non-null leaf array, `None` if the array is not of the expected type.
type ReadFn<T> = fn(&dyn Array, usize) -> Option<T>;

fn read_utf8(array: &dyn Array, k: usize) -> Option<String> {
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(k).to_owned()),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(k).to_owned()),
        _ => None,
    }
}

fn read_i64(array: &dyn Array, k: usize) -> Option<i64> {
    array.as_primitive_opt::<Int64Type>().map(|a| a.value(k))
}

fn read_f64(array: &dyn Array, k: usize) -> Option<f64> {
    array.as_primitive_opt::<Float64Type>().map(|a| a.value(k))
}

fn leaf_value<T>(array: &dyn Array, k: usize, read: ReadFn<T>) -> std::result::Result<T, String> {
    if *array.data_type() == DataType::Null || array.is_null(k) {
        return Err("null value".into());
    }
    read(array, k).ok_or_else(|| format!("unexpected type {}", array.data_type()))
}

fn leaf_values<T>(array: &dyn Array, range: Range<usize>, read: ReadFn<T>) -> std::result::Result<Vec<T>, String> {
    let start = range.start;
    range.map(|k| leaf_value(array, k, read).map_err(|m| format!("item {}: {m}", k - start))).collect()
}

/// The value range of list `i` of `array` in its child array, and the child; a null list is
/// empty.
fn list_slot(array: &dyn Array, i: usize) -> std::result::Result<(Range<usize>, &ArrayRef), String> {
    let null = array.is_null(i);
    match array.data_type() {
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let o = list.value_offsets();
            let range = if null { 0..0 } else { o[i] as usize..o[i + 1] as usize };
            Ok((range, list.values()))
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            let o = list.value_offsets();
            let range = if null { 0..0 } else { o[i] as usize..o[i + 1] as usize };
            Ok((range, list.values()))
        }
        DataType::Null => Err("null value where a list was expected".into()),
        other => Err(format!("unexpected type {other} where a list was expected")),
    }
}

/// A binary (or large binary) column of an [`ArrowTable`]: encoded images, read one row at a
/// time from the table's memory map.
#[derive(Clone)]
pub struct BinaryColumn {
    path: PathBuf,
    name: String,
    chunks: Vec<ArrayRef>,
    starts: Vec<usize>,
}

impl BinaryColumn {
    /// The file the column belongs to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The column's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of row `row` (numbered across record batches).
    ///
    /// # Errors
    /// [`Error::Format`] naming the file, column and row if the row is out of range or null.
    pub fn value(&self, row: usize) -> Result<&[u8]> {
        let fail = |msg: String| Error::format(&self.path, format!("column '{}', row {row}: {msg}", self.name));
        let (chunk, i) = locate(&self.starts, row).ok_or_else(|| fail(format!("out of range 0..{}", self.len())))?;
        let array: &dyn Array = &*self.chunks[chunk];
        if array.is_null(i) {
            return Err(fail("null value".into()));
        }
        match array.data_type() {
            DataType::Binary => Ok(array.as_binary::<i32>().value(i)),
            DataType::LargeBinary => Ok(array.as_binary::<i64>().value(i)),
            other => Err(fail(format!("unexpected type {other}"))),
        }
    }

    /// Decodes the image in row `row` (format guessed from its content) to RGB8.
    ///
    /// # Errors
    /// As [`BinaryColumn::value`], and [`Error::Image`] naming the file, the row and the column
    /// if the bytes are not a decodable (non-empty) image.
    pub fn decode_rgb(&self, row: usize) -> Result<RgbImage> {
        let bytes = self.value(row)?;
        let fail = |msg: String| Error::Image {
            path: self.path.clone(),
            msg: format!("row {row}, column '{}': {msg}", self.name),
        };
        let image = image::load_from_memory(bytes).map_err(|e| fail(e.to_string()))?;
        if image.width() == 0 || image.height() == 0 {
            return Err(fail("the image is empty".into()));
        }
        Ok(image.to_rgb8())
    }
}

impl fmt::Debug for BinaryColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryColumn")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("rows", &self.len())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Options shared by the readers
// ---------------------------------------------------------------------------------------------

type ViewFn = dyn Fn(&RgbImage, Option<u64>) -> Result<Vec<f32>> + Send + Sync;

/// What a reader does with a decoded RGB image: a [`Preprocess`] view (geometry, `[0, 1]`,
/// normalisation, `[3, S, S]` CHW) or any function to normalised CHW pixels, given the sample's
/// augmentation seed (`None` for evaluation).
#[derive(Clone)]
pub struct ArrowImageView {
    label: String,
    f: Arc<ViewFn>,
}

impl ArrowImageView {
    /// A view computed by `f`, named `label` in debug output. For ViLT's variable-size view,
    /// `f` resizes (shorter side 384, longer at most 639, sides floored to multiples of 32) and
    /// normalises; the batcher then pads.
    pub fn custom(
        label: impl Into<String>,
        f: impl Fn(&RgbImage, Option<u64>) -> Result<Vec<f32>> + Send + Sync + 'static,
    ) -> Self {
        Self { label: label.into(), f: Arc::new(f) }
    }

    /// Applies the view to `image`.
    ///
    /// # Errors
    /// Whatever the view reports ([`Error::Config`] for an invalid [`Preprocess`]).
    pub fn apply(&self, image: &RgbImage, augment: Option<u64>) -> Result<Vec<f32>> {
        (self.f)(image, augment)
    }
}

impl From<Preprocess> for ArrowImageView {
    /// The [`preprocess_rgb`] view of `pre` (checked when applied). ViLT's normalisation is
    /// [`Normalization::Half`](super::preprocess::Normalization::Half).
    fn from(pre: Preprocess) -> Self {
        Self {
            label: format!("{pre:?}"),
            f: Arc::new(move |image: &RgbImage, augment: Option<u64>| preprocess_rgb(image, &pre, augment)),
        }
    }
}

impl fmt::Debug for ArrowImageView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrowImageView").field(&self.label).finish()
    }
}

/// How the readers turn a row into a [`VlSample`]: the image view and an optional text prefix.
#[derive(Clone, Debug)]
pub struct VlArrowOptions {
    /// Applied to every decoded image.
    pub view: ArrowImageView,
    /// Prepended, as is, to every text the reader returns (question, sentence, caption).
    pub text_prefix: Option<String>,
}

impl VlArrowOptions {
    /// Options with image view `view` and no text prefix (METER).
    pub fn new(view: impl Into<ArrowImageView>) -> Self {
        Self { view: view.into(), text_prefix: None }
    }

    /// Prepends `prefix` to every text (nothing is inserted between the two).
    pub fn with_text_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.text_prefix = Some(prefix.into());
        self
    }

    /// Prepends [`VILT_TEXT_PREFIX`], as the APT code's ViLT data does for questions, NLVR2
    /// sentences and positive/evaluation captions (not for sampled negative captions).
    pub fn with_vilt_prefix(self) -> Self {
        self.with_text_prefix(VILT_TEXT_PREFIX)
    }

    /// `raw` with the prefix, if any.
    pub fn text(&self, raw: &str) -> String {
        match &self.text_prefix {
            Some(prefix) => format!("{prefix}{raw}"),
            None => raw.to_owned(),
        }
    }

    fn image(&self, column: &BinaryColumn, row: usize, augment: Option<u64>) -> Result<Vec<f32>> {
        self.view.apply(&column.decode_rgb(row)?, augment)
    }
}

/// Where a sample comes from: file (index in the list given to the reader), row (over the
/// file's record batches) and position `j` in the row's list (after de-duplication for
/// Flickr30K).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleRef {
    /// Index of the file in the reader's list.
    pub file: usize,
    /// Row in that file.
    pub row: usize,
    /// Question / sentence / caption index in the row.
    pub j: usize,
}

fn open_all(paths: &[impl AsRef<Path>]) -> Result<Vec<ArrowTable>> {
    if paths.is_empty() {
        return Err(Error::Config("no Arrow files given".into()));
    }
    paths.iter().map(|p| ArrowTable::open(p.as_ref())).collect()
}

/// `vqav2_train+vqav2_trainable_val`: the file stems joined by `+`.
fn joined_name(tables: &[ArrowTable]) -> String {
    let stem = |t: &ArrowTable| {
        t.path().file_stem().map_or_else(|| t.path().display().to_string(), |s| s.to_string_lossy().into_owned())
    };
    tables.iter().map(stem).collect::<Vec<_>>().join("+")
}

fn out_of_range(name: &str, index: usize, len: usize) -> Error {
    Error::Config(format!("{name}: sample index {index} out of range 0..{len}"))
}

// ---------------------------------------------------------------------------------------------
// VQAv2
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct VqaQuestion {
    at: SampleRef,
    question: String,
    question_id: i64,
    image_id: i64,
    answers: Vec<(usize, f32)>,
}

/// VQAv2 arrow files (`vqav2_*.arrow`): one sample per (row, question), the row's image, the
/// question, and the soft target of its `(answer_labels, answer_scores)` pairs
/// (`vilt/datasets/vqav2_dataset.py`). Rows of the test files carry no answers (empty answer
/// columns): their targets are empty.
#[derive(Clone, Debug)]
pub struct VqaArrow {
    name: String,
    files: Vec<PathBuf>,
    images: Vec<BinaryColumn>,
    questions: Vec<VqaQuestion>,
    num_answers: usize,
    options: VlArrowOptions,
}

impl VqaArrow {
    /// Reads `paths` in order, for an answer vocabulary of `num_answers` answers (3,129 for
    /// ViLT's files).
    ///
    /// # Errors
    /// - [`Error::Config`] if `paths` is empty.
    /// - As [`ArrowTable::open`] for each file.
    /// - [`Error::Format`] naming the file (and column) for a missing or mistyped column, and the
    ///   row for: question ids not one per question; answer-label / answer-score lists neither
    ///   empty nor one per question; and, naming the question, labels and scores of different
    ///   lengths, a label outside `0..num_answers`, a score outside `[0, 1]`.
    pub fn open(paths: &[impl AsRef<Path>], num_answers: usize, options: VlArrowOptions) -> Result<Self> {
        let tables = open_all(paths)?;
        let mut images = Vec::with_capacity(tables.len());
        let mut questions = Vec::new();
        for (file, table) in tables.iter().enumerate() {
            let image = table.binary("image")?;
            let texts = table.string_lists("questions")?;
            let question_ids = table.int64_lists("question_id")?;
            let image_ids = table.int64s("image_id")?;
            let labels = table.int64_list_lists("answer_labels")?;
            let scores = table.f64_list_lists("answer_scores")?;
            for (row, texts) in texts.into_iter().enumerate() {
                let fail = |msg: String| Error::format(table.path(), format!("row {row}: {msg}"));
                let n = texts.len();
                let (qids, labels, scores) = (&question_ids[row], &labels[row], &scores[row]);
                if qids.len() != n {
                    return Err(fail(format!("{n} questions but {} question ids", qids.len())));
                }
                // The test splits are written with empty answer columns (`write_vqa.py`).
                let answered = !labels.is_empty() || !scores.is_empty();
                if answered && (labels.len() != n || scores.len() != n) {
                    return Err(fail(format!(
                        "{n} questions but {} answer-label and {} answer-score lists",
                        labels.len(),
                        scores.len()
                    )));
                }
                for (j, question) in texts.into_iter().enumerate() {
                    let answers = if answered {
                        vqa_target(&labels[j], &scores[j], num_answers)
                            .map_err(|m| fail(format!("question {j}: {m}")))?
                    } else {
                        Vec::new()
                    };
                    questions.push(VqaQuestion {
                        at: SampleRef { file, row, j },
                        question,
                        question_id: qids[j],
                        image_id: image_ids[row],
                        answers,
                    });
                }
            }
            images.push(image);
        }
        Ok(Self {
            name: joined_name(&tables),
            files: tables.iter().map(|t| t.path().to_path_buf()).collect(),
            images,
            questions,
            num_answers,
            options,
        })
    }

    /// The answer vocabulary of the files, `label → answer`: rebuilt from the `answers` column
    /// (the answer strings) and the `answer_labels` column (their labels), aligned per question,
    /// as ViLT's `VQAv2DataModule.setup` (`vilt/datamodules/vqav2_datamodule.py`) rebuilds
    /// `id2answer` from the training and validation files. Its length is the largest label + 1;
    /// labels no file names get [`UNKNOWN_ANSWER`] (ViLT's default). Unlike ViLT, a label named
    /// with two different answers is an error.
    ///
    /// # Errors
    /// - As [`VqaArrow::open`] for the files and columns.
    /// - [`Error::Format`] naming the file and row (and question) where the answer and label
    ///   lists are not aligned, a label is negative or implausibly large (≥ 2²⁴), or a label is
    ///   named with an answer other than the one it had first (that place is named too).
    pub fn answer_vocab(paths: &[impl AsRef<Path>]) -> Result<Vec<String>> {
        let tables = open_all(paths)?;
        // label → (answer, file, row, question) of its first occurrence
        let mut seen: HashMap<usize, (String, usize, usize, usize)> = HashMap::new();
        for (file, table) in tables.iter().enumerate() {
            let answers = table.string_list_lists("answers")?;
            let labels = table.int64_list_lists("answer_labels")?;
            for (row, (answers, labels)) in answers.iter().zip(&labels).enumerate() {
                let fail = |msg: String| Error::format(table.path(), format!("row {row}: {msg}"));
                if answers.len() != labels.len() {
                    return Err(fail(format!(
                        "{} answer lists but {} answer-label lists",
                        answers.len(),
                        labels.len()
                    )));
                }
                for (j, (answers, labels)) in answers.iter().zip(labels).enumerate() {
                    if answers.len() != labels.len() {
                        return Err(fail(format!(
                            "question {j}: {} answers but {} labels",
                            answers.len(),
                            labels.len()
                        )));
                    }
                    for (answer, &label) in answers.iter().zip(labels) {
                        let id = usize::try_from(label)
                            .ok()
                            .filter(|&id| id < MAX_ANSWER_LABEL)
                            .ok_or_else(|| fail(format!("question {j}: answer label {label} is not in 0..2^24")))?;
                        match seen.entry(id) {
                            Entry::Vacant(slot) => {
                                slot.insert((answer.clone(), file, row, j));
                            }
                            Entry::Occupied(slot) => {
                                let (first, first_file, first_row, first_j) = slot.get();
                                if first != answer {
                                    return Err(fail(format!(
                                        "question {j}: answer label {id} is '{answer}' here but '{first}' in {} \
                                         row {first_row} question {first_j}",
                                        tables[*first_file].path().display()
                                    )));
                                }
                            }
                        }
                    }
                }
            }
        }
        let len = seen.keys().max().map_or(0, |&max| max + 1);
        let mut vocab = vec![UNKNOWN_ANSWER.to_owned(); len];
        for (id, (answer, ..)) in seen {
            vocab[id] = answer;
        }
        Ok(vocab)
    }

    /// The files, in reading order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Size of the answer vocabulary the labels were checked against.
    pub fn num_answers(&self) -> usize {
        self.num_answers
    }

    /// The reader's options.
    pub fn options(&self) -> &VlArrowOptions {
        &self.options
    }

    /// File, row and question index of sample `index`.
    pub fn sample_ref(&self, index: usize) -> Option<SampleRef> {
        self.questions.get(index).map(|q| q.at)
    }

    /// The question of sample `index`, without the text prefix.
    pub fn question(&self, index: usize) -> Option<&str> {
        self.questions.get(index).map(|q| q.question.as_str())
    }

    /// The VQA question id of sample `index` (what a test-server submission is keyed by).
    pub fn question_id(&self, index: usize) -> Option<i64> {
        self.questions.get(index).map(|q| q.question_id)
    }

    /// The COCO image id of sample `index`.
    pub fn image_id(&self, index: usize) -> Option<i64> {
        self.questions.get(index).map(|q| q.image_id)
    }
}

/// The soft target of one question: `(label, score)` pairs, labels checked against the
/// vocabulary and scores against `[0, 1]` (0.3 / 0.6 / 0.9 / 1.0 in `write_vqa.py`).
fn vqa_target(labels: &[i64], scores: &[f64], num_answers: usize) -> std::result::Result<Vec<(usize, f32)>, String> {
    if labels.len() != scores.len() {
        return Err(format!("{} answer labels but {} answer scores", labels.len(), scores.len()));
    }
    labels
        .iter()
        .zip(scores)
        .map(|(&label, &score)| {
            let index = usize::try_from(label)
                .ok()
                .filter(|&l| l < num_answers)
                .ok_or_else(|| format!("answer label {label} is outside the answer vocabulary 0..{num_answers}"))?;
            if !(0.0..=1.0).contains(&score) {
                return Err(format!("answer score {score} (label {label}) is outside [0, 1]"));
            }
            Ok((index, score as f32))
        })
        .collect()
}

impl Samples<VlSample> for VqaArrow {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.questions.len()
    }

    fn get(&self, index: usize, augment: Option<u64>) -> Result<VlSample> {
        let q = self.questions.get(index).ok_or_else(|| out_of_range(&self.name, index, self.questions.len()))?;
        let image = self.options.image(&self.images[q.at.file], q.at.row, augment)?;
        Ok(VlSample {
            text: self.options.text(&q.question),
            images: vec![image],
            target: VlTarget::Answers(q.answers.clone()),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// NLVR2
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Nlvr2Statement {
    at: SampleRef,
    sentence: String,
    label: usize,
}

/// NLVR2 arrow files (`nlvr2_*.arrow`): one sample per (row, sentence), the row's two images
/// (`image_0`, `image_1`, in that order), the sentence, and [`VlTarget::Class`] 1 for `"True"`,
/// 0 for `"False"` (`vilt/datasets/nlvr2_dataset.py`: `answers == "True"`).
#[derive(Clone, Debug)]
pub struct Nlvr2Arrow {
    name: String,
    files: Vec<PathBuf>,
    images: Vec<[BinaryColumn; 2]>,
    identifiers: Vec<Vec<String>>,
    statements: Vec<Nlvr2Statement>,
    options: VlArrowOptions,
}

impl Nlvr2Arrow {
    /// Reads `paths` in order.
    ///
    /// # Errors
    /// - [`Error::Config`] if `paths` is empty.
    /// - As [`ArrowTable::open`] for each file.
    /// - [`Error::Format`] naming the file (and column) for a missing or mistyped column, and the
    ///   row for a row whose sentence and answer lists differ in length or (naming the sentence)
    ///   an answer other than `"True"` and `"False"` (ViLT would read it as false).
    pub fn open(paths: &[impl AsRef<Path>], options: VlArrowOptions) -> Result<Self> {
        let tables = open_all(paths)?;
        let mut images = Vec::with_capacity(tables.len());
        let mut identifiers = Vec::with_capacity(tables.len());
        let mut statements = Vec::new();
        for (file, table) in tables.iter().enumerate() {
            let pair = [table.binary("image_0")?, table.binary("image_1")?];
            let sentences = table.string_lists("questions")?;
            let answers = table.string_lists("answers")?;
            let ids = table.strings("identifier")?;
            for (row, (sentences, answers)) in sentences.into_iter().zip(&answers).enumerate() {
                let fail = |msg: String| Error::format(table.path(), format!("row {row}: {msg}"));
                if sentences.len() != answers.len() {
                    return Err(fail(format!("{} sentences but {} answers", sentences.len(), answers.len())));
                }
                for (j, (sentence, answer)) in sentences.into_iter().zip(answers).enumerate() {
                    let label = match answer.as_str() {
                        "True" => 1,
                        "False" => 0,
                        other => {
                            return Err(fail(format!(
                                "sentence {j}: answer '{other}' is neither \"True\" nor \"False\""
                            )));
                        }
                    };
                    statements.push(Nlvr2Statement { at: SampleRef { file, row, j }, sentence, label });
                }
            }
            images.push(pair);
            identifiers.push(ids);
        }
        Ok(Self {
            name: joined_name(&tables),
            files: tables.iter().map(|t| t.path().to_path_buf()).collect(),
            images,
            identifiers,
            statements,
            options,
        })
    }

    /// The files, in reading order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The reader's options.
    pub fn options(&self) -> &VlArrowOptions {
        &self.options
    }

    /// File, row and sentence index of sample `index`.
    pub fn sample_ref(&self, index: usize) -> Option<SampleRef> {
        self.statements.get(index).map(|s| s.at)
    }

    /// The sentence of sample `index`, without the text prefix.
    pub fn sentence(&self, index: usize) -> Option<&str> {
        self.statements.get(index).map(|s| s.sentence.as_str())
    }

    /// The `identifier` of the row of sample `index` (e.g. `dev-850-0`).
    pub fn identifier(&self, index: usize) -> Option<&str> {
        let at = self.statements.get(index)?.at;
        self.identifiers[at.file].get(at.row).map(String::as_str)
    }
}

impl Samples<VlSample> for Nlvr2Arrow {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.statements.len()
    }

    fn get(&self, index: usize, augment: Option<u64>) -> Result<VlSample> {
        let s = self.statements.get(index).ok_or_else(|| out_of_range(&self.name, index, self.statements.len()))?;
        let [image_0, image_1] = &self.images[s.at.file];
        // One seed per image, so that a training view does not flip both images alike.
        let seed = |k: u64| augment.map(|a| super::splitmix64(a ^ k));
        let images =
            vec![self.options.image(image_0, s.at.row, seed(0))?, self.options.image(image_1, s.at.row, seed(1))?];
        Ok(VlSample { text: self.options.text(&s.sentence), images, target: VlTarget::Class(s.label) })
    }
}

// ---------------------------------------------------------------------------------------------
// Flickr30K
// ---------------------------------------------------------------------------------------------

/// Flickr30K Karpathy-split arrow files (`f30k_caption_karpathy_*.arrow`): one sample per (row,
/// distinct caption), the row's image, the caption and [`VlTarget::Match`] of the image index
/// (the row over all files; `vilt/datasets/f30k_caption_karpathy_dataset.py` on
/// `base_dataset.py`).
#[derive(Clone, Debug)]
pub struct F30kArrow {
    name: String,
    files: Vec<PathBuf>,
    images: Vec<BinaryColumn>,
    /// Image index → (file, row).
    rows: Vec<(usize, usize)>,
    image_ids: Vec<String>,
    /// Per sample: the caption, its image index and where it is.
    captions: Vec<String>,
    caption_image: Vec<usize>,
    refs: Vec<SampleRef>,
    options: VlArrowOptions,
}

impl F30kArrow {
    /// Reads `paths` in order, de-duplicating each row's captions (first occurrence kept).
    ///
    /// # Errors
    /// - [`Error::Config`] if `paths` is empty.
    /// - As [`ArrowTable::open`] for each file.
    /// - [`Error::Format`] naming the file and column for a missing or mistyped column (and the
    ///   row of a null value).
    pub fn open(paths: &[impl AsRef<Path>], options: VlArrowOptions) -> Result<Self> {
        let tables = open_all(paths)?;
        let mut images = Vec::with_capacity(tables.len());
        let (mut rows, mut image_ids) = (Vec::new(), Vec::new());
        let (mut captions, mut caption_image, mut refs) = (Vec::new(), Vec::new(), Vec::new());
        for (file, table) in tables.iter().enumerate() {
            let image = table.binary("image")?;
            let row_captions = table.string_lists("caption")?;
            let ids = table.strings("image_id")?;
            for (row, (texts, id)) in row_captions.into_iter().zip(ids).enumerate() {
                let image_index = rows.len();
                rows.push((file, row));
                image_ids.push(id);
                let mut distinct: Vec<String> = Vec::with_capacity(texts.len());
                for text in texts {
                    if !distinct.contains(&text) {
                        distinct.push(text);
                    }
                }
                for (j, text) in distinct.into_iter().enumerate() {
                    refs.push(SampleRef { file, row, j });
                    captions.push(text);
                    caption_image.push(image_index);
                }
            }
            images.push(image);
        }
        Ok(Self {
            name: joined_name(&tables),
            files: tables.iter().map(|t| t.path().to_path_buf()).collect(),
            images,
            rows,
            image_ids,
            captions,
            caption_image,
            refs,
            options,
        })
    }

    /// The files, in reading order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The reader's options.
    pub fn options(&self) -> &VlArrowOptions {
        &self.options
    }

    /// Number of images (rows over all files).
    pub fn num_images(&self) -> usize {
        self.rows.len()
    }

    /// Every caption, in sample order (`captions()[i]` is the text of sample `i`), without the
    /// text prefix: the pool ViLT draws negative captions from (`get_false_text`).
    pub fn captions(&self) -> &[String] {
        &self.captions
    }

    /// The image index of sample `index` (what its [`VlTarget::Match`] holds).
    pub fn image_of(&self, index: usize) -> Option<usize> {
        self.caption_image.get(index).copied()
    }

    /// File, row and caption index (after de-duplication) of sample `index`.
    pub fn sample_ref(&self, index: usize) -> Option<SampleRef> {
        self.refs.get(index).copied()
    }

    /// The `image_id` (Flickr30K file name) of image `image`.
    pub fn image_id(&self, image: usize) -> Option<&str> {
        self.image_ids.get(image).map(String::as_str)
    }

    /// Image `image` through the reader's view (e.g. to pair a caption with another image).
    ///
    /// # Errors
    /// [`Error::Config`] if `image` is out of range, and as [`BinaryColumn::decode_rgb`] and the
    /// view.
    pub fn image(&self, image: usize, augment: Option<u64>) -> Result<Vec<f32>> {
        let &(file, row) = self.rows.get(image).ok_or_else(|| {
            Error::Config(format!("{}: image index {image} out of range 0..{}", self.name, self.rows.len()))
        })?;
        self.options.image(&self.images[file], row, augment)
    }
}

impl Samples<VlSample> for F30kArrow {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.captions.len()
    }

    fn get(&self, index: usize, augment: Option<u64>) -> Result<VlSample> {
        let caption = self.captions.get(index).ok_or_else(|| out_of_range(&self.name, index, self.captions.len()))?;
        let image = self.caption_image[index];
        Ok(VlSample {
            text: self.options.text(caption),
            images: vec![self.image(image, augment)?],
            target: VlTarget::Match(image),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// VQA answer normalisation
// ---------------------------------------------------------------------------------------------

/// Punctuation of the VQA evaluation (`vqaEval.py`'s `punct`; ViLT's `vilt/utils/glossary.py`).
const VQA_PUNCT: [char; 21] =
    [';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'];

/// Number words mapped to digits (`manualMap`).
const VQA_NUMBERS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

const VQA_ARTICLES: [&str; 3] = ["a", "an", "the"];

/// The full contraction table of the VQA evaluation (`vqaEval.py`'s `contractions`, copied
/// unchanged into ViLT's `glossary.py`), quirks included: `somebody'd → somebodyd`, and the
/// entries with capitals (`Im`, `Ive`, `Id've`, `I'dve`) never match, as words are
/// lower-cased first.
const VQA_CONTRACTIONS: [(&str, &str); 120] = [
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// The standard VQA answer normalisation: `processPunctuation` then `processDigitArticle` of
/// the official evaluation (`vqaEval.py`), as ViLT's `normalize_word`
/// (`vilt/utils/glossary.py`) applies it to build the answer vocabulary:
///
/// 1. Punctuation (`; / [ ] " { } ( ) = + \ _ - > < @ ` , ? !`): each mark is deleted if the
///    *original* answer has it next to a space (`"p "` or `" p"`) or contains a digit–comma–digit
///    sequence anywhere, and replaced by a space otherwise.
/// 2. Periods not followed by a digit are deleted (the official pattern `(?!<=\d)(\.)(?!\d)`,
///    whose first group is a no-op look-ahead), at most 32 of them: the official call passes
///    `re.UNICODE` (= 32) as `sub`'s `count`.
/// 3. Lower-case, split on whitespace, number words `none`/`zero`…`ten` → digits, articles
///    `a`/`an`/`the` dropped, contractions restored from the full official table (e.g.
///    `dont` → `don't`), words joined by single spaces (then ViLT's no-op `replace(",", "")`).
///
/// E.g. `"Two dogs!"` → `"2 dogs"`, `"the red one"` → `"red 1"`, `"1,000"` → `"1000"`,
/// `"t-shirt"` → `"t shirt"`, `"3.5"` → `"3.5"`. Digits are ASCII digits here (Python's `\d`
/// also matches other Unicode decimal digits).
pub fn normalize_vqa_answer(answer: &str) -> String {
    let is_digit = |c: char| c.is_ascii_digit();
    let chars: Vec<char> = answer.chars().collect();
    let comma_number = chars.windows(3).any(|w| is_digit(w[0]) && w[1] == ',' && is_digit(w[2]));
    let mut text = answer.to_owned();
    for p in VQA_PUNCT {
        let spaced = answer.contains(&format!("{p} ")) || answer.contains(&format!(" {p}"));
        text = text.replace(p, if spaced || comma_number { "" } else { " " });
    }
    let chars: Vec<char> = text.chars().collect();
    let mut stripped = String::with_capacity(text.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        if c == '.' && removed < 32 && !chars.get(i + 1).is_some_and(|&n| is_digit(n)) {
            removed += 1;
            continue;
        }
        stripped.push(c);
    }
    let lower = stripped.to_lowercase();
    let words: Vec<&str> = lower
        .split_whitespace()
        .map(|w| VQA_NUMBERS.iter().find(|(k, _)| *k == w).map_or(w, |(_, v)| *v))
        .filter(|w| !VQA_ARTICLES.contains(w))
        .map(|w| VQA_CONTRACTIONS.iter().find(|(k, _)| *k == w).map_or(w, |(_, v)| *v))
        .collect();
    words.join(" ").replace(',', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matches_the_official_function() {
        // Expected values computed with ViLT's `normalize_word` (vilt/utils/glossary.py).
        let cases = [
            ("Two dogs!", "2 dogs"),
            ("the red one", "red 1"),
            ("Yes.", "yes"),
            ("3.5", "3.5"),
            ("1,000", "1000"),
            ("1,000 people!", "1000 people"),
            ("dont", "don't"),
            ("whats up", "what's up"),
            ("isnt it", "isn't it"),
            ("t-shirt", "t shirt"),
            ("one-way", "1 way"),
            ("left/right", "left right"),
            ("hello, world", "hello world"),
            ("dogs, cats", "dogs cats"),
            ("red ,blue", "red blue"),
            ("(left)", "left"),
            ("a dog", "dog"),
            ("An Apple", "apple"),
            ("None", "0"),
            ("TWO", "2"),
            ("ten", "10"),
            ("Im", "im"),
            ("mr. smith", "mr smith"),
            ("10 a.m.", "10 am"),
            ("e.g.", "eg"),
            ("12:30", "12:30"),
            ("$5", "$5"),
            ("100%", "100%"),
            ("it's", "it's"),
            ("yes!!", "yes"),
            ("black and white", "black and white"),
            ("   ", ""),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_vqa_answer(raw), expected, "{raw:?}");
        }
        // `count = re.UNICODE = 32`: only the first 32 periods go.
        assert_eq!(normalize_vqa_answer(&format!("a{}", ".".repeat(40))), format!("a{}", ".".repeat(8)));
    }

    #[test]
    fn contraction_table_has_no_duplicates() {
        let mut keys: Vec<&str> = VQA_CONTRACTIONS.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), VQA_CONTRACTIONS.len());
    }

    #[test]
    fn shapes_and_rows() {
        let list = |dt: DataType| DataType::List(Arc::new(arrow_schema::Field::new_list_field(dt, true)));
        let large = |dt: DataType| DataType::LargeList(Arc::new(arrow_schema::Field::new_list_field(dt, true)));
        assert!(shape_matches(&DataType::LargeBinary, 0, Leaf::Binary));
        assert!(shape_matches(&list(list(DataType::Int64)), 2, Leaf::Int64));
        assert!(shape_matches(&large(list(DataType::LargeUtf8)), 2, Leaf::Utf8));
        assert!(shape_matches(&list(DataType::Null), 2, Leaf::Float64));
        assert!(!shape_matches(&list(DataType::Int64), 2, Leaf::Int64));
        assert!(!shape_matches(&list(list(DataType::Int32)), 2, Leaf::Int64));
        assert!(!shape_matches(&DataType::Utf8, 1, Leaf::Utf8));
        assert_eq!(shape_name(2, Leaf::Float64), "list<list<double>>");
        // Batches of 2, 0 and 3 rows.
        let starts = [0, 2, 2, 5];
        assert_eq!(locate(&starts, 0), Some((0, 0)));
        assert_eq!(locate(&starts, 1), Some((0, 1)));
        assert_eq!(locate(&starts, 2), Some((2, 0)));
        assert_eq!(locate(&starts, 4), Some((2, 2)));
        assert_eq!(locate(&starts, 5), None);
        assert_eq!(locate(&[0], 0), None);
    }
}
