//! The book's comparison scripts: several networks trained side by side on the same
//! mini-batches, their losses recorded (ch. 6 `optimizer_compare_mnist.py` and
//! `weight_init_compare.py`).

use crate::budget::{Budget, Need};
use crate::data::Mnist;
use crate::describe::Spec;
use crate::error::{Error, Result};
use crate::layers::Targets;
use crate::optim::{self, Optimizer};
use crate::train::accuracy;
use crate::{Activation, Init, MlpConfig, MultiLayerNet, Network, Rng};

/// The contestants' common settings (the book's: 784-100-100-100-100-10 ReLU, batch 128,
/// 2000 iterations, losses every 100).
#[derive(Clone, Debug, PartialEq)]
pub struct CompareConfig {
    pub hidden: Vec<usize>,
    pub batch_size: usize,
    pub iters: usize,
    pub every: usize,
    pub seed: u64,
    pub threads: usize,
    /// The memory the comparison may take, in bytes; None: what the machine has available.
    pub max_memory: Option<u64>,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            hidden: vec![100; 4],
            batch_size: 128,
            iters: 2000,
            every: 100,
            seed: 0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_memory: None,
        }
    }
}

/// One contestant's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub name: String,
    /// Mini-batch loss at every iteration.
    pub losses: Vec<f64>,
    /// Test accuracy at the end.
    pub test_accuracy: f64,
}

impl Outcome {
    /// Mean loss of the last `n` iterations (a steadier figure than the last batch's).
    pub fn final_loss(&self, n: usize) -> f64 {
        let tail = &self.losses[self.losses.len().saturating_sub(n)..];
        tail.iter().sum::<f64>() / tail.len().max(1) as f64
    }
}

/// The book's optimizers at the book's learning rates, and the other three at theirs:
/// SGD 0.01, Momentum 0.01, Nesterov 0.01, AdaGrad 0.01, RMSprop 0.01, Adam 0.001, AdamW 0.001.
pub fn compare_optimizers(
    data: &Mnist,
    cfg: &CompareConfig,
    on_every: impl FnMut(usize, &[(String, f64)]),
) -> Result<Vec<Outcome>> {
    let names = [
        ("SGD", "sgd", 0.01),
        ("Momentum", "momentum", 0.01),
        ("Nesterov", "nesterov", 0.01),
        ("AdaGrad", "adagrad", 0.01),
        ("RMSprop", "rmsprop", 0.01),
        ("Adam", "adam", 0.001),
        ("AdamW", "adamw", 0.001),
    ];
    let mut contestants = Vec::new();
    for (label, name, lr) in names {
        let net = build(data, cfg, Init::He)?;
        contestants.push((label.to_string(), net, optim::by_name::<f32>(name, lr)?));
    }
    race(data, cfg, contestants, on_every)
}

/// The book's three initialisations, SGD lr 0.01: std 0.01, Xavier, He.
pub fn compare_init(
    data: &Mnist,
    cfg: &CompareConfig,
    on_every: impl FnMut(usize, &[(String, f64)]),
) -> Result<Vec<Outcome>> {
    let mut contestants = Vec::new();
    for (label, init) in [
        ("std=0.01", Init::Std(0.01)),
        ("Xavier", Init::Xavier),
        ("He", Init::He),
    ] {
        let net = build(data, cfg, init)?;
        contestants.push((label.to_string(), net, optim::by_name::<f32>("sgd", 0.01)?));
    }
    race(data, cfg, contestants, on_every)
}

/// A ReLU MultiLayerNet of the configured size, weights from `init` and the configured seed
/// (every contestant starts from the same draws).
fn build(data: &Mnist, cfg: &CompareConfig, init: Init) -> Result<Network<f32>> {
    let mlp = MlpConfig {
        input_size: data.train.input_size(),
        hidden: cfg.hidden.clone(),
        output_size: data.classes,
        activation: Activation::Relu,
        init,
        batch_norm: false,
        dropout: 0.0,
        weight_decay: 0.0,
    };
    let spec = Spec::parse(&mlp.description(), data.train.shape(), data.classes)?;
    // the seven optimizers' networks at once, each with up to two buffers (Adam's)
    let need = Need::training(&spec, cfg.batch_size, 2, 0, 1).times(7);
    let lower = "--batch-size or the hidden sizes";
    Budget::or_machine(cfg.max_memory).check(&need, "this comparison", lower)?;
    MultiLayerNet::new(&mlp, &mut Rng::new(cfg.seed))
}

type Contestant = (String, Network<f32>, Box<dyn Optimizer<f32>>);

/// Trains every contestant on the same random mini-batches; calls `on_every` with the
/// current losses every `cfg.every` iterations (and at the first).
fn race(
    data: &Mnist,
    cfg: &CompareConfig,
    mut contestants: Vec<Contestant>,
    mut on_every: impl FnMut(usize, &[(String, f64)]),
) -> Result<Vec<Outcome>> {
    if cfg.batch_size == 0 || cfg.iters == 0 || cfg.every == 0 || data.train.is_empty() {
        return Err(Error::Config(
            "--batch-size, --iters and --every must be at least 1".into(),
        ));
    }
    let mut rng = Rng::new(cfg.seed ^ 0x5eed);
    let mut losses = vec![Vec::new(); contestants.len()];
    for i in 0..cfg.iters {
        let indices: Vec<usize> = (0..cfg.batch_size)
            .map(|_| rng.below(data.train.len()))
            .collect();
        let (x, t) = data.train.input_batch::<f32>(&indices);
        for ((_, net, opt), record) in contestants.iter_mut().zip(&mut losses) {
            let loss = net.backprop(x.clone(), Targets::Labels(&t)) as f64;
            if loss.is_finite() {
                net.update(opt.as_mut());
            }
            record.push(loss);
        }
        if i % cfg.every == 0 || i + 1 == cfg.iters {
            let now: Vec<(String, f64)> = contestants
                .iter()
                .zip(&losses)
                .map(|((n, _, _), l)| (n.clone(), l[i]))
                .collect();
            on_every(i, &now);
        }
    }
    Ok(contestants
        .into_iter()
        .zip(losses)
        .map(|((name, net, _), losses)| Outcome {
            name,
            losses,
            test_accuracy: accuracy(&net, &data.test, cfg.threads),
        })
        .collect())
}
