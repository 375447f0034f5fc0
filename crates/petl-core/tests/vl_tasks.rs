//! The vision–language tasks train through the one loop on the shapes world's generated
//! language: VQA (soft scores), NLVR2-style pairs, and contrastive retrieval; bad samples are
//! named errors.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use petl_core::bert::{Bert, BertConfig, TextInput};
use petl_core::data::Samples;
use petl_core::data::shapes::{ShapesVl, VlTask, answer_vocab, word_tokenizer, word_vocab};
use petl_core::data::text::HfTokenizer;
use petl_core::data::vl::{VlSample, VlTarget};
use petl_core::encoder::{EncodeOptions, Encoder};
use petl_core::hooks::NoHooks;
use petl_core::train::vl::{ContrastiveLoss, DualEncoder, Retrieval, VlClassification, VlClassify, VlInput, Vqa};
use petl_core::train::{Task, TrainConfig, Trainer};
use petl_core::vit::{Vit, VitConfig};

const MAX_LEN: usize = 32;
const SIZE: usize = 16;

/// Frozen random text and image towers with trained fusion and projection layers.
#[derive(Module, Debug)]
struct Toy {
    fuse: Linear,
    text_proj: Linear,
    image_proj: Linear,
    text: Bert,
    vision: Vit,
}

impl Toy {
    fn new(outputs: usize, slots: usize, device: &Device) -> Self {
        Self {
            fuse: LinearConfig::new(32 + 32 * slots, outputs).init(device),
            text_proj: LinearConfig::new(32, 16).init(device),
            image_proj: LinearConfig::new(32, 16).init(device),
            text: BertConfig::new(word_vocab().len(), 32, 1, 2, 64, MAX_LEN).init(device).no_grad(),
            vision: VitConfig::new(SIZE, 4, 32, 1, 2, 64).init(device).no_grad(),
        }
    }

    /// Mean of the last hidden states (the random towers' pooled outputs barely vary).
    fn text_feature(&self, text: TextInput) -> Tensor<2> {
        let last = self.text.encode(text, &NoHooks, EncodeOptions::default()).last;
        let [b, _, d] = last.dims();
        last.mean_dim(1).reshape([b, d])
    }

    fn image_feature(&self, images: Tensor<4>) -> Tensor<2> {
        let last = self.vision.encode(images, &NoHooks, EncodeOptions::default()).last;
        let [b, _, d] = last.dims();
        last.mean_dim(1).reshape([b, d])
    }
}

impl VlClassify for Toy {
    fn vl_logits(&self, input: VlInput) -> Tensor<2> {
        let mut parts = vec![self.text_feature(input.text)];
        parts.extend(input.images.into_iter().map(|i| self.image_feature(i)));
        self.fuse.forward(Tensor::cat(parts, 1))
    }
}

fn normalise(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-6);
    x / norm
}

impl DualEncoder for Toy {
    fn embed_images(&self, images: Tensor<4>) -> Tensor<2> {
        normalise(self.image_proj.forward(self.image_feature(images)))
    }

    fn embed_texts(&self, text: TextInput) -> Tensor<2> {
        normalise(self.text_proj.forward(self.text_feature(text)))
    }
}

fn tokenizer() -> HfTokenizer {
    HfTokenizer::from_tokenizer(word_tokenizer().unwrap(), 0, "shapes word tokenizer")
}

fn trainer(epochs: usize, lr: f64) -> Trainer {
    let mut t = Trainer::new(
        TrainConfig::new()
            .with_epochs(epochs)
            .with_warmup_epochs(0)
            .with_batch_size(16)
            .with_lr(lr)
            .with_eval_every(epochs),
    );
    t.progress = false;
    t
}

#[test]
fn vqa_trains_on_generated_questions() {
    let device = Device::flex().autodiff();
    device.seed(1);
    let task = Vqa { tokenizer: tokenizer(), max_len: MAX_LEN, answers: answer_vocab().len() };
    let train = ShapesVl::new(VlTask::Vqa, 112, SIZE, 1);
    let model = Toy::new(task.answers, 1, &device);
    let before = task.evaluate(&model.valid(), &train, 64).unwrap().primary;
    let (_, report) = trainer(6, 2e-2).fit_task(model, &task, &[&train], &[&train]).unwrap();
    let (first, last) = (&report.epochs[0], report.epochs.last().unwrap());
    assert!(last.train_loss < 0.8 * first.train_loss, "loss {} -> {}", first.train_loss, last.train_loss);
    assert!(report.final_test > before + 10.0, "VQA score {before:.1} -> {:.1}", report.final_test);
    assert_eq!(report.metric, "VQA score (%)");
}

#[test]
fn nlvr_pairs_and_retrieval_train_and_report_their_metrics() {
    let device = Device::flex().autodiff();
    device.seed(2);
    let pairs = ShapesVl::new(VlTask::Nlvr, 32, SIZE, 3);
    let task = VlClassification { tokenizer: tokenizer(), max_len: MAX_LEN };
    let (_, report) = trainer(1, 1e-2).fit_task(Toy::new(2, 2, &device), &task, &[&pairs], &[&pairs]).unwrap();
    assert!((0.0..=100.0).contains(&report.final_test) && report.epochs[0].train_loss.is_finite());

    let data = ShapesVl::new(VlTask::Retrieval, 80, SIZE, 4);
    let task =
        Retrieval { tokenizer: tokenizer(), max_len: MAX_LEN, loss: ContrastiveLoss::InfoNce { temperature: 0.1 } };
    let model = Toy::new(2, 1, &device);
    let before = task.evaluate(&model.valid(), &data, 16).unwrap();
    assert_eq!(before.metrics.len(), 7, "recall@1/5/10 both ways and rsum: {:?}", before.metrics);
    let (_, report) = trainer(12, 1e-2).fit_task(model, &task, &[&data], &[&data]).unwrap();
    let after = &report.epochs.last().unwrap().test_metrics;
    assert!(after["t2i_r@1"] > before.metrics["t2i_r@1"] + 15.0, "{:?} -> {after:?}", before.metrics);
    let triplet = Retrieval { loss: ContrastiveLoss::Triplet { margin: 0.2, hardest: true }, ..task };
    let (_, r) = trainer(1, 1e-2).fit_task(Toy::new(2, 1, &device), &triplet, &[&data], &[&data]).unwrap();
    assert!(r.epochs[0].train_loss.is_finite());
}

#[test]
fn bad_samples_are_named_errors() {
    let device = Device::flex();
    let task = Vqa { tokenizer: tokenizer(), max_len: MAX_LEN, answers: answer_vocab().len() };
    let mut sample = ShapesVl::new(VlTask::Vqa, 4, SIZE, 1).get(0, None).unwrap();
    let wrong = VlSample { target: VlTarget::Class(1), ..sample.clone() };
    let err = <Vqa as Task<Toy>>::batch(&task, vec![sample.clone(), wrong], &device).unwrap_err().to_string();
    assert!(err.contains("sample 1") && err.contains("not a VQA sample"), "{err}");
    sample.text = "what colour is the circle ?".repeat(8);
    let err = <Vqa as Task<Toy>>::batch(&task, vec![sample.clone()], &device).unwrap_err().to_string();
    assert!(err.contains("more than the model's 32 positions"), "{err}");
    sample.text = "what".into();
    sample.images[0].truncate(10);
    let err = <Vqa as Task<Toy>>::batch(&task, vec![sample], &device).unwrap_err().to_string();
    assert!(err.contains("image 0 has 10 values"), "{err}");
}
