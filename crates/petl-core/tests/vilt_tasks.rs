//! ViLT's tasks and trainable sets: the ITM + MLM pretraining batches, cross-encoder retrieval
//! (sampled negatives, full-grid recall), and the PETL trainable set measured as gradients.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use petl_core::accounting::{measure_gradients, measure_trainable};
use petl_core::data::Samples;
use petl_core::data::shapes::language::{ShapesVl, VlTask, word_tokenizer, word_vocab};
use petl_core::data::text::HfTokenizer;
use petl_core::train::objectives::IGNORE_INDEX;
use petl_core::train::vl::{PairRetrieval, VlClassify};
use petl_core::train::{Task, TrainConfig, Trainer};
use petl_core::tuners::ParallelAdapterConfig;
use petl_core::vilt::ViltConfig;
use petl_core::vilt::pretrain::{ItmMlm, ViltPretraining};
use petl_core::vl_model::{ViltModel, VlHeadKind};

fn tokenizer() -> HfTokenizer {
    HfTokenizer::from_tokenizer(word_tokenizer().unwrap(), 0, "words")
}

fn config() -> ViltConfig {
    ViltConfig::new(word_vocab().len(), 16, 1, 2, 32, 32, 8, 16).with_modality_types(3)
}

fn ints<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
}

#[test]
fn itm_mlm_batches_mask_every_caption_alike_and_learn_only_matched_words() {
    let device = Device::flex();
    let data = ShapesVl::new(VlTask::Retrieval, 40, 16, 1);
    let items: Vec<_> = (0..8).map(|i| data.get(i, None).unwrap()).collect();
    let content: Vec<i64> = (10..40).collect();
    let task = ItmMlm {
        tokenizer: tokenizer(),
        max_len: 32,
        mask_id: 4,
        special_ids: vec![0, 1, 2, 3, 4],
        maskable: Some(content.clone()),
        seed: 3,
    };
    let batch = <ItmMlm as Task<ViltPretraining>>::batch(&task, items.clone(), &device).unwrap();
    let matched = ints(batch.matched.clone());
    assert_eq!(matched, vec![1, 0, 1, 0, 1, 0, 1, 0], "odd rows see the next image (40 captions of 8 images)");
    let ids = ints(batch.input.text.input_ids.clone());
    let labels = ints(batch.labels.clone());
    let t = batch.input.text.input_ids.dims()[1];
    for row in 0..8 {
        let masks = ids[row * t..(row + 1) * t].iter().filter(|&&i| i == 4).count();
        assert!(masks >= 1, "row {row}: every caption has a masked content word, matched or not");
        let learned = labels[row * t..(row + 1) * t].iter().filter(|&&l| l != IGNORE_INDEX).count();
        if matched[row] == 1 {
            assert_eq!(learned, masks, "row {row}: every mask of a matched pair is a target");
        } else {
            assert_eq!(learned, 0, "row {row}: no MLM target on a mismatched pair");
        }
    }
    assert!(labels.iter().filter(|&&l| l != IGNORE_INDEX).all(|l| content.contains(l)));
    // Deterministic: the same batch masks the same words.
    let again = <ItmMlm as Task<ViltPretraining>>::batch(&task, items, &device).unwrap();
    assert_eq!(ints(again.input.text.input_ids), ids);
}

#[test]
fn pretraining_and_cross_encoder_retrieval_run_through_the_loop() {
    let device = Device::flex().autodiff();
    device.seed(1);
    let cfg = config();
    let data = ShapesVl::new(VlTask::Retrieval, 30, 16, 2);
    let task = ItmMlm {
        tokenizer: tokenizer(),
        max_len: 32,
        mask_id: 4,
        special_ids: vec![0, 1, 2, 3, 4],
        maskable: None,
        seed: 1,
    };
    let trainer =
        Trainer::new(TrainConfig::new().with_epochs(1).with_warmup_epochs(0).with_batch_size(8).with_lr(1e-3));
    let (pre, report) =
        trainer.fit_task(ViltPretraining::vilt(cfg.init(&device), &device), &task, &[&data], &[&data]).unwrap();
    assert!(report.epochs[0].train_loss.is_finite());
    assert!(report.epochs[0].test_metrics.contains_key("mlm_accuracy"));

    let pool: Vec<String> = (0..data.len()).map(|i| data.example(i).text).collect();
    let retrieval = PairRetrieval { tokenizer: tokenizer(), max_len: 32, negatives: 3, pool, seed: 5 };
    let items: Vec<_> = (0..4).map(|i| data.get(i, None).unwrap()).collect();
    let (input, group) =
        <PairRetrieval as Task<ViltModel<petl_core::hooks::NoHooks>>>::batch(&retrieval, items.clone(), &device)
            .unwrap();
    assert_eq!(group, 4);
    assert_eq!(input.text.input_ids.dims()[0], 16, "each caption with 3 negatives");
    let (again, _) =
        <PairRetrieval as Task<ViltModel<petl_core::hooks::NoHooks>>>::batch(&retrieval, items, &device).unwrap();
    assert_eq!(ints(again.text.input_ids), ints(input.text.input_ids), "negatives follow the batch, not a clock");

    let model =
        ViltModel::new(pre.backbone, petl_core::hooks::NoHooks, VlHeadKind::Rank, Some(2), Some(&pre.itm), &device)
            .petl_trainable();
    let (_, report) = trainer.fit_task(model, &retrieval, &[&data], &[&data]).unwrap();
    let m = &report.epochs[0].test_metrics;
    for k in ["i2t_r@1", "t2i_r@1", "i2t_r@10", "t2i_r@10"] {
        assert!((0.0..=100.0).contains(&m[k]), "{k}: {m:?}");
    }
    assert_eq!(m["t2i_r@10"], 100.0, "6 images: every caption's image is in its top 10");
}

#[test]
fn petl_trainable_set_gets_gradients_and_nothing_else() {
    let device = Device::flex().autodiff();
    // Two modality types: the NLVR2 model grows a third, a copy of the image row.
    let cfg = config().with_modality_types(2);
    let backbone = cfg.init(&device);
    let tuner = ParallelAdapterConfig::new().with_bottleneck(4).init(&cfg.layout(), &device);
    let model = ViltModel::new(backbone, tuner, VlHeadKind::Nlvr2, Some(2), None, &device).petl_trainable();
    let b = &model.backbone;
    let expected = model.tuner.num_params()
        + model.head.num_params()
        + cfg.hidden_size
        + b.pooler.num_params()
        + 3 * cfg.hidden_size
        + b.text_token_type_embeddings.num_params();
    let types = model.backbone.token_type_embeddings.weight.val();
    assert_eq!(types.dims(), [3, cfg.hidden_size]);
    let diff = (types.clone().narrow(0, 1, 1) - types.narrow(0, 2, 1)).abs().max().into_scalar::<f32>();
    assert_eq!(diff, 0.0);
    let (trainable, frozen) = measure_trainable(&model);
    assert_eq!(trainable, expected);
    assert_eq!(model.tuner.num_params() + model.petl_set_params_besides_tuner(), expected);
    assert_eq!(trainable + frozen, model.num_params());
    let data = ShapesVl::new(VlTask::Nlvr, 4, 16, 3);
    let items: Vec<_> = (0..4).map(|i| data.get(i, None).unwrap()).collect();
    let task = petl_core::train::vl::VlClassification { tokenizer: tokenizer(), max_len: 32 };
    let (input, labels) = <petl_core::train::vl::VlClassification as Task<
        ViltModel<petl_core::tuners::ParallelAdapter>,
    >>::batch(&task, items, &device)
    .unwrap();
    let logits = model.vl_logits(input);
    let loss = burn::nn::loss::CrossEntropyLossConfig::new().init(&device).forward(logits, labels);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let g = measure_gradients(&model, &grads);
    assert_eq!(g.frozen_with_gradient, 0);
    assert_eq!(g.bytes, 4 * trainable, "a gradient for every trainable parameter, none for the frozen ones");
}

/// METER's retrieval grid computes each unimodal stream once and fuses the pairs: its scores
/// equal one full forward per (image, caption chunk), with a tuner in the fusion layers, a class
/// token and chunks of different padded lengths; the retrieval evaluation runs on it.
#[test]
fn meter_scores_the_retrieval_grid_from_cached_streams_as_pair_by_pair() {
    use petl_core::bert::BertConfig;
    use petl_core::meter::MeterConfig;
    use petl_core::train::vl::{score_grid_pairwise, vl_images};
    use petl_core::tuners::DeepPromptConfig;
    use petl_core::vit::{VitConfig, VitPooling};
    use petl_core::vl_model::VlModel;
    let device = Device::flex();
    device.seed(4);
    let text = BertConfig::new(word_vocab().len(), 16, 1, 2, 32, 34).with_pad_token_id(1).with_roberta_positions(true);
    let vision = VitConfig::new(16, 8, 16, 1, 2, 32).clip().with_pooling(VitPooling::NormedClass);
    let cfg = MeterConfig::new(text, vision)
        .with_hidden_size(16)
        .with_num_layers(2)
        .with_num_heads(2)
        .with_intermediate_size(32);
    let layout = cfg.layout();
    // Prompts of a non-trivial scale in every fusion attention: the hooks must reach the fused pairs.
    let tuner = DeepPromptConfig::new().with_num_prompts(3).with_init_patch_size(1).init(&layout, &device);
    let model = VlModel::new(cfg.init(&device), tuner, VlHeadKind::Rank, Some(0), None, &device);
    let data = ShapesVl::new(VlTask::Retrieval, 10, 16, 3);
    let items: Vec<_> = (0..data.len()).map(|i| data.get(i, None).unwrap()).collect();
    let tok = HfTokenizer::from_tokenizer(word_tokenizer().unwrap(), 1, "words");
    let chunks: Vec<_> = items
        .chunks(4)
        .map(|c| {
            let texts: Vec<String> = c.iter().map(|s| s.text.clone()).collect();
            tok.encode(&texts, 32).unwrap().input(0, c.len(), &device)
        })
        .collect();
    let images: Vec<_> =
        items[..3].iter().map(|s| vl_images(std::slice::from_ref(s), &device).unwrap().remove(0)).collect();
    let cached = model.score_grid(&images, &chunks);
    let pairwise = score_grid_pairwise(&model, &images, &chunks);
    assert_eq!(cached.len(), 3 * 10);
    let diff = cached.iter().zip(&pairwise).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "cached streams vs pair by pair: max |diff| {diff}");
    let spread = pairwise.iter().fold(f32::MIN, |m, &x| m.max(x)) - pairwise.iter().fold(f32::MAX, |m, &x| m.min(x));
    assert!(spread > 1e-4, "the scores differ between pairs ({spread})");

    let retrieval = PairRetrieval { tokenizer: tok, max_len: 32, negatives: 2, pool: vec![], seed: 0 };
    let eval = <PairRetrieval as Task<_>>::evaluate(&retrieval, &model, &data, 4).unwrap();
    assert!((0.0..=100.0).contains(&eval.metrics["t2i_r@1"]), "{:?}", eval.metrics);
}
