//! The Arrow IPC readers of `data::arrow` on tiny files written with arrow's `FileWriter` in
//! the column layout of ViLT's writers (`vilt/utils/write_{vqa,nlvr2,f30k_karpathy}.py`), each
//! with at least two record batches: sample order across batches and files, targets, the VQA
//! answer vocabulary, and errors that name the file, column and row.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, Int64Array, LargeBinaryArray, ListArray, NullArray, RecordBatch, StringArray,
};
use arrow_buffer::OffsetBuffer;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field};
use image::{ImageFormat, Rgb, RgbImage};
use petl_core::data::Samples;
use petl_core::data::arrow::{
    ArrowImageView, ArrowTable, F30kArrow, Nlvr2Arrow, SampleRef, VILT_TEXT_PREFIX, VlArrowOptions, VqaArrow,
    read_arrow_table,
};
use petl_core::data::arrow_samples::{
    f64_list_lists, int64_list_lists, int64_lists, record_batch, string_list_lists, string_lists, write_ipc,
};
use petl_core::data::preprocess::{Normalization, Preprocess};
use petl_core::data::vl::VlTarget;

// ----------------------------------------------------------------------------- helpers

fn encode(w: u32, h: u32, rgb: [u8; 3], format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    RgbImage::from_pixel(w, h, Rgb(rgb)).write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn png(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    encode(w, h, rgb, ImageFormat::Png)
}

fn jpeg(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    encode(w, h, rgb, ImageFormat::Jpeg)
}

/// A view reporting `[width, height, r, g, b]` of the decoded image's top-left pixel, so that
/// tests see which image a sample decoded.
fn probe() -> VlArrowOptions {
    VlArrowOptions::new(ArrowImageView::custom("probe", |img: &RgbImage, _augment: Option<u64>| {
        let p = img.get_pixel(0, 0).0;
        Ok(vec![img.width() as f32, img.height() as f32, f32::from(p[0]), f32::from(p[1]), f32::from(p[2])])
    }))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    record_batch(columns).unwrap()
}

fn write_file(path: &Path, batches: &[RecordBatch]) {
    write_ipc(path, batches).unwrap();
}

fn binaries(values: &[&[u8]]) -> ArrayRef {
    Arc::new(BinaryArray::from_vec(values.to_vec()))
}

fn large_binaries(values: &[&[u8]]) -> ArrayRef {
    Arc::new(LargeBinaryArray::from_vec(values.to_vec()))
}

fn strings(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn int64s(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

/// `rows` empty lists typed `list<null>`: what pyarrow infers for the answer columns of the VQA
/// test files (`write_vqa.py` stores `[]` there).
fn null_lists(rows: usize) -> ArrayRef {
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Null, true)),
        OffsetBuffer::new_zeroed(rows),
        Arc::new(NullArray::new(0)),
        None,
    ))
}

/// Two record batches of VQA rows (rows 0–1, then row 2); answer vocabulary
/// `["yes", "no", "2", "red"]`. `labels` replaces the `answer_labels` column when given.
fn vqa_batches(labels: Option<[ArrayRef; 2]>) -> Vec<RecordBatch> {
    let default_labels = || {
        [
            int64_list_lists(vec![vec![vec![0, 1], vec![2]], vec![vec![1]]]),
            int64_list_lists(vec![vec![vec![0], vec![3], vec![1, 2]]]),
        ]
    };
    let [labels_a, labels_b] = labels.unwrap_or_else(default_labels);
    let (img0, img1, img2) = (png(3, 2, [10, 20, 30]), jpeg(16, 8, [200, 100, 50]), png(5, 4, [1, 2, 3]));
    let a = batch(vec![
        ("image", binaries(&[&img0, &img1])),
        ("questions", string_lists(vec![vec!["what color?", "how many?"], vec!["is it red?"]])),
        ("answers", string_list_lists(vec![vec![vec!["yes", "no"], vec!["2"]], vec![vec!["no"]]])),
        ("answer_labels", labels_a),
        ("answer_scores", f64_list_lists(vec![vec![vec![1.0, 0.3], vec![0.6]], vec![vec![0.9]]])),
        ("image_id", int64s(&[10, 11])),
        ("question_id", int64_lists(vec![vec![100, 101], vec![110]])),
        ("split", strings(&["train", "train"])),
    ]);
    let b = batch(vec![
        ("image", binaries(&[&img2])),
        ("questions", string_lists(vec![vec!["q2a", "q2b", "q2c"]])),
        ("answers", string_list_lists(vec![vec![vec!["yes"], vec!["red"], vec!["no", "2"]]])),
        ("answer_labels", labels_b),
        ("answer_scores", f64_list_lists(vec![vec![vec![1.0], vec![0.3], vec![0.6, 0.9]]])),
        ("image_id", int64s(&[12])),
        ("question_id", int64_lists(vec![vec![120, 121, 122]])),
        ("split", strings(&["train"])),
    ]);
    vec![a, b]
}

/// `vqav2_train.arrow` (two batches) and `vqav2_test.arrow` (answer columns `list<null>`).
fn vqa_files(dir: &Path) -> (PathBuf, PathBuf) {
    let train = dir.join("vqav2_train.arrow");
    write_file(&train, &vqa_batches(None));
    let test = dir.join("vqav2_test.arrow");
    let img = png(2, 2, [7, 8, 9]);
    write_file(
        &test,
        &[batch(vec![
            ("image", binaries(&[&img, &img])),
            ("questions", string_lists(vec![vec!["t0"], vec!["t1a", "t1b"]])),
            ("answers", null_lists(2)),
            ("answer_labels", null_lists(2)),
            ("answer_scores", null_lists(2)),
            ("image_id", int64s(&[20, 21])),
            ("question_id", int64_lists(vec![vec![200], vec![210, 211]])),
            ("split", strings(&["test", "test"])),
        ])],
    );
    (train, test)
}

fn refs(file: usize, pairs: &[(usize, usize)]) -> Vec<SampleRef> {
    pairs.iter().map(|&(row, j)| SampleRef { file, row, j }).collect()
}

fn err_text<T: std::fmt::Debug>(r: petl_core::Result<T>) -> String {
    r.unwrap_err().to_string()
}

// ----------------------------------------------------------------------------- tables

#[test]
fn tables_keep_every_batch_and_number_rows_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _) = vqa_files(dir.path());
    let table = read_arrow_table(&train).unwrap();
    assert_eq!(table.batches().len(), 2);
    assert_eq!(table.num_rows(), 3);
    assert_eq!(table.locate(1), Some((0, 1)));
    assert_eq!(table.locate(2), Some((1, 0)));
    assert_eq!(table.locate(3), None);
    assert!(table.column_names().contains(&"split"));
    assert_eq!(table.int64s("image_id").unwrap(), vec![10, 11, 12]);
    assert_eq!(table.int64_lists("question_id").unwrap(), vec![vec![100, 101], vec![110], vec![120, 121, 122]]);
    assert_eq!(table.strings("split").unwrap(), vec!["train"; 3]);
    assert_eq!(table.string_lists("questions").unwrap()[2], vec!["q2a", "q2b", "q2c"]);
    assert_eq!(table.string_list_lists("answers").unwrap()[2], vec![vec!["yes"], vec!["red"], vec!["no", "2"]]);
    assert_eq!(table.f64_list_lists("answer_scores").unwrap()[0], vec![vec![1.0, 0.3], vec![0.6]]);
    let images = table.binary("image").unwrap();
    assert_eq!(images.len(), 3);
    assert_eq!(images.value(2).unwrap(), png(5, 4, [1, 2, 3]).as_slice());
    assert_eq!(images.decode_rgb(0).unwrap().get_pixel(0, 0), &Rgb([10, 20, 30]));
    assert!(images.value(3).is_err());

    // The same file from memory.
    let in_memory = ArrowTable::from_bytes(&train, std::fs::read(&train).unwrap()).unwrap();
    assert_eq!(in_memory.num_rows(), 3);
    assert_eq!(in_memory.int64_list_lists("answer_labels").unwrap(), table.int64_list_lists("answer_labels").unwrap());
}

#[test]
fn non_ipc_files_are_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.arrow");
    std::fs::write(&garbage, b"this is not an arrow file, just some text").unwrap();
    let err = err_text(read_arrow_table(&garbage));
    assert!(err.contains("garbage.arrow") && err.contains("not an Arrow IPC file"), "{err}");

    let empty = dir.path().join("empty.arrow");
    std::fs::write(&empty, b"").unwrap();
    let err = err_text(read_arrow_table(&empty));
    assert!(err.contains("empty.arrow") && err.contains("not an Arrow IPC file"), "{err}");

    // An IPC stream holds the same batches but is not an IPC file.
    let stream = dir.path().join("stream.arrow");
    let b = batch(vec![("image_id", int64s(&[1, 2]))]);
    let mut writer = StreamWriter::try_new(std::fs::File::create(&stream).unwrap(), &b.schema()).unwrap();
    writer.write(&b).unwrap();
    writer.finish().unwrap();
    drop(writer);
    let err = err_text(read_arrow_table(&stream));
    assert!(err.contains("stream.arrow") && err.contains("IPC stream"), "{err}");

    let err = err_text(read_arrow_table(dir.path().join("missing.arrow")));
    assert!(err.contains("missing.arrow"), "{err}");
}

// ----------------------------------------------------------------------------- VQAv2

#[test]
fn vqa_samples_are_row_question_pairs_with_soft_targets() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = vqa_files(dir.path());
    let vqa = VqaArrow::open(&[&train], 4, probe()).unwrap();
    assert_eq!(vqa.name(), "vqav2_train");
    assert_eq!(vqa.len(), 6);
    let order: Vec<SampleRef> = (0..6).map(|i| vqa.sample_ref(i).unwrap()).collect();
    assert_eq!(order, refs(0, &[(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2)]));
    assert_eq!(vqa.sample_ref(6), None);

    let s = vqa.get(1, None).unwrap();
    assert_eq!(s.text, "how many?");
    assert_eq!(s.images, vec![vec![3.0, 2.0, 10.0, 20.0, 30.0]]);
    assert_eq!(s.target, VlTarget::Answers(vec![(2, 0.6f64 as f32)]));
    let s = vqa.get(0, None).unwrap();
    assert_eq!(s.target, VlTarget::Answers(vec![(0, 1.0), (1, 0.3f64 as f32)]));
    // Row 1 is the JPEG (lossy: only its size is checked).
    assert_eq!(vqa.get(2, Some(3)).unwrap().images[0][..2], [16.0, 8.0]);
    // Row 2 lives in the second record batch.
    let s = vqa.get(5, None).unwrap();
    assert_eq!(s.text, "q2c");
    assert_eq!(s.images, vec![vec![5.0, 4.0, 1.0, 2.0, 3.0]]);
    assert_eq!(s.target, VlTarget::Answers(vec![(1, 0.6f64 as f32), (2, 0.9f64 as f32)]));
    assert_eq!((vqa.question_id(3), vqa.image_id(3), vqa.question(4)), (Some(120), Some(12), Some("q2b")));
    assert!(vqa.get(6, None).is_err());

    // Several files are concatenated; the test file's rows have no answers.
    let both = VqaArrow::open(&[&train, &test], 4, probe().with_vilt_prefix()).unwrap();
    assert_eq!(both.name(), "vqav2_train+vqav2_test");
    assert_eq!(both.len(), 9);
    let order: Vec<SampleRef> = (6..9).map(|i| both.sample_ref(i).unwrap()).collect();
    assert_eq!(order, refs(1, &[(0, 0), (1, 0), (1, 1)]));
    let s = both.get(7, None).unwrap();
    assert_eq!(s.text, format!("{VILT_TEXT_PREFIX}t1a"));
    assert_eq!(s.target, VlTarget::Answers(vec![]));
    assert_eq!(s.images, vec![vec![2.0, 2.0, 7.0, 8.0, 9.0]]);
    assert_eq!(both.question_id(8), Some(211));
    assert_eq!(both.get(0, None).unwrap().text, format!("{VILT_TEXT_PREFIX}what color?"));
}

#[test]
fn vqa_images_go_through_the_preprocess_view() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _) = vqa_files(dir.path());
    let options = VlArrowOptions::new(Preprocess::vtab(8).with_norm(Normalization::Half));
    let vqa = VqaArrow::open(&[&train], 4, options).unwrap();
    let s = vqa.get(0, None).unwrap();
    assert_eq!(s.images.len(), 1);
    let image = &s.images[0];
    assert_eq!(image.len(), 3 * 8 * 8);
    // A uniform (10, 20, 30) image stays uniform through the resize; then (x/255 − 0.5)/0.5.
    for (c, value) in [10.0f32, 20.0, 30.0].into_iter().enumerate() {
        let expected = (value / 255.0 - 0.5) / 0.5;
        let plane = &image[c * 64..(c + 1) * 64];
        assert!(plane.iter().all(|v| (v - expected).abs() < 2.5 / 255.0), "channel {c}: {plane:?}");
    }
}

#[test]
fn vqa_answer_vocabulary_is_rebuilt_from_answers_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = vqa_files(dir.path());
    assert_eq!(VqaArrow::answer_vocab(&[&train, &test]).unwrap(), vec!["yes", "no", "2", "red"]);
    assert!(VqaArrow::answer_vocab(&[&test]).unwrap().is_empty());

    // Label 0 names "yes" in row 0 and "no" in row 1.
    let bad = dir.path().join("vqav2_bad.arrow");
    let labels = [
        int64_list_lists(vec![vec![vec![0, 1], vec![2]], vec![vec![0]]]),
        int64_list_lists(vec![vec![vec![0], vec![3], vec![1, 2]]]),
    ];
    write_file(&bad, &vqa_batches(Some(labels)));
    let err = err_text(VqaArrow::answer_vocab(&[&bad]));
    assert!(err.contains("vqav2_bad.arrow") && err.contains("row 1") && err.contains("'yes'"), "{err}");
}

#[test]
fn vqa_labels_outside_the_vocabulary_name_the_row_and_question() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _) = vqa_files(dir.path());
    // Label 3 ("red") is row 2, question 1.
    let err = err_text(VqaArrow::open(&[&train], 3, probe()));
    assert!(
        err.contains("vqav2_train.arrow")
            && err.contains("row 2")
            && err.contains("question 1")
            && err.contains("0..3"),
        "{err}"
    );
}

#[test]
fn mistyped_columns_name_the_column_and_the_expected_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vqav2_float_labels.arrow");
    let labels = [
        f64_list_lists(vec![vec![vec![0.0, 1.0], vec![2.0]], vec![vec![1.0]]]),
        f64_list_lists(vec![vec![vec![0.0], vec![3.0], vec![1.0, 2.0]]]),
    ];
    write_file(&path, &vqa_batches(Some(labels)));
    let err = err_text(VqaArrow::open(&[&path], 4, probe()));
    assert!(
        err.contains("vqav2_float_labels.arrow") && err.contains("answer_labels") && err.contains("list<list<int64>>"),
        "{err}"
    );
    // A flat column where a list is expected.
    let table = read_arrow_table(&path).unwrap();
    let err = err_text(table.string_lists("split"));
    assert!(err.contains("'split'") && err.contains("list<string>"), "{err}");
    let err = err_text(table.binary("questions"));
    assert!(err.contains("'questions'") && err.contains("binary"), "{err}");
}

// ----------------------------------------------------------------------------- NLVR2

fn nlvr2_file(path: &Path, second_answers: Vec<&str>) {
    let (a0, a1, b0, b1) = (png(2, 3, [1, 1, 1]), png(4, 5, [2, 2, 2]), png(6, 7, [3, 3, 3]), png(8, 9, [4, 4, 4]));
    // Large binary images: the reader accepts both offset widths.
    let a = batch(vec![
        ("image_0", large_binaries(&[&a0])),
        ("image_1", large_binaries(&[&a1])),
        ("questions", string_lists(vec![vec!["s0a", "s0b"]])),
        ("answers", string_lists(vec![vec!["True", "False"]])),
        ("identifier", strings(&["dev-0-0"])),
    ]);
    let n = second_answers.len();
    let b = batch(vec![
        ("image_0", large_binaries(&[&b0])),
        ("image_1", large_binaries(&[&b1])),
        ("questions", string_lists(vec![["s1a", "s1b", "s1c"][..n].to_vec()])),
        ("answers", string_lists(vec![second_answers])),
        ("identifier", strings(&["dev-1-0"])),
    ]);
    write_file(path, &[a, b]);
}

#[test]
fn nlvr2_samples_have_two_images_and_true_false_classes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nlvr2_dev.arrow");
    nlvr2_file(&path, vec!["False"]);
    let nlvr2 = Nlvr2Arrow::open(&[&path], probe().with_vilt_prefix()).unwrap();
    assert_eq!(nlvr2.name(), "nlvr2_dev");
    assert_eq!(nlvr2.len(), 3);
    let order: Vec<SampleRef> = (0..3).map(|i| nlvr2.sample_ref(i).unwrap()).collect();
    assert_eq!(order, refs(0, &[(0, 0), (0, 1), (1, 0)]));

    let s = nlvr2.get(0, None).unwrap();
    assert_eq!(s.text, format!("{VILT_TEXT_PREFIX}s0a"));
    assert_eq!(s.images, vec![vec![2.0, 3.0, 1.0, 1.0, 1.0], vec![4.0, 5.0, 2.0, 2.0, 2.0]]);
    assert_eq!(s.target, VlTarget::Class(1));
    assert_eq!(nlvr2.get(1, Some(9)).unwrap().target, VlTarget::Class(0));
    let s = nlvr2.get(2, None).unwrap();
    assert_eq!(s.images, vec![vec![6.0, 7.0, 3.0, 3.0, 3.0], vec![8.0, 9.0, 4.0, 4.0, 4.0]]);
    assert_eq!(s.target, VlTarget::Class(0));
    assert_eq!(
        (nlvr2.sentence(2), nlvr2.identifier(2), nlvr2.identifier(1)),
        (Some("s1a"), Some("dev-1-0"), Some("dev-0-0"))
    );
}

#[test]
fn nlvr2_answers_other_than_true_false_name_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nlvr2_maybe.arrow");
    nlvr2_file(&path, vec!["True", "Maybe"]);
    let err = err_text(Nlvr2Arrow::open(&[&path], probe()));
    assert!(
        err.contains("nlvr2_maybe.arrow")
            && err.contains("row 1")
            && err.contains("sentence 1")
            && err.contains("Maybe"),
        "{err}"
    );
}

// ----------------------------------------------------------------------------- Flickr30K

fn f30k_file(path: &Path, second_image: &[u8]) {
    let first = png(3, 3, [5, 5, 5]);
    let a = batch(vec![
        ("image", binaries(&[&first])),
        ("caption", string_lists(vec![vec!["a dog", "a cat", "a dog", "A dog"]])),
        ("image_id", strings(&["0.jpg"])),
        ("split", strings(&["test"])),
    ]);
    let b = batch(vec![
        ("image", binaries(&[second_image])),
        ("caption", string_lists(vec![vec!["x", "x", "y"]])),
        ("image_id", strings(&["1.jpg"])),
        ("split", strings(&["test"])),
    ]);
    write_file(path, &[a, b]);
}

#[test]
fn f30k_captions_are_deduplicated_in_first_occurrence_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f30k_caption_karpathy_test.arrow");
    f30k_file(&path, &png(4, 4, [6, 6, 6]));
    let f30k = F30kArrow::open(&[&path], probe().with_vilt_prefix()).unwrap();
    assert_eq!(f30k.num_images(), 2);
    assert_eq!(f30k.len(), 5);
    assert_eq!(f30k.captions(), ["a dog", "a cat", "A dog", "x", "y"]);
    let order: Vec<SampleRef> = (0..5).map(|i| f30k.sample_ref(i).unwrap()).collect();
    assert_eq!(order, refs(0, &[(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]));
    let targets: Vec<VlTarget> = (0..5).map(|i| f30k.get(i, None).unwrap().target).collect();
    assert_eq!(targets, [0, 0, 0, 1, 1].map(VlTarget::Match));
    assert_eq!(f30k.image_of(3), Some(1));
    assert_eq!((f30k.image_id(0), f30k.image_id(1)), (Some("0.jpg"), Some("1.jpg")));

    // The prefix goes on the sample's text, not on the caption pool (negatives are unprefixed).
    let s = f30k.get(0, None).unwrap();
    assert_eq!(s.text, format!("{VILT_TEXT_PREFIX}a dog"));
    assert_eq!(s.images, vec![vec![3.0, 3.0, 5.0, 5.0, 5.0]]);
    assert_eq!(f30k.get(4, None).unwrap().images, vec![vec![4.0, 4.0, 6.0, 6.0, 6.0]]);
    assert_eq!(f30k.image(1, None).unwrap(), vec![4.0, 4.0, 6.0, 6.0, 6.0]);
    assert!(f30k.image(2, None).is_err());

    // Two files: image indices continue over the second one.
    let two = F30kArrow::open(&[&path, &path], probe()).unwrap();
    assert_eq!((two.num_images(), two.len()), (4, 10));
    assert_eq!(two.get(7, None).unwrap().target, VlTarget::Match(2));
    assert_eq!(two.sample_ref(7), Some(SampleRef { file: 1, row: 0, j: 2 }));
    assert_eq!(two.get(7, None).unwrap().text, "A dog");
}

#[test]
fn undecodable_images_name_the_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f30k_broken.arrow");
    f30k_file(&path, b"not an image at all");
    let f30k = F30kArrow::open(&[&path], probe()).unwrap();
    assert!(f30k.get(0, None).is_ok());
    let err = err_text(f30k.get(3, None));
    assert!(err.contains("f30k_broken.arrow") && err.contains("row 1") && err.contains("'image'"), "{err}");
}

#[test]
fn missing_columns_name_the_column_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f30k_no_captions.arrow");
    let img = png(2, 2, [0, 0, 0]);
    let rows = |id: &str| batch(vec![("image", binaries(&[&img])), ("image_id", strings(&[id]))]);
    write_file(&path, &[rows("0.jpg"), rows("1.jpg")]);
    let err = err_text(F30kArrow::open(&[&path], probe()));
    assert!(err.contains("f30k_no_captions.arrow") && err.contains("'caption'"), "{err}");

    let err = err_text(VqaArrow::open(&[&path], 4, probe()));
    assert!(err.contains("f30k_no_captions.arrow") && err.contains("'questions'"), "{err}");
    let err = err_text(Nlvr2Arrow::open(&[&path], probe()));
    assert!(err.contains("'image_0'"), "{err}");
    let none: [&Path; 0] = [];
    assert!(F30kArrow::open(&none, probe()).is_err());
}
