//! A steady-state training step allocates nothing: forward, loss, backward and the optimizer's
//! update run in memory kept from the step before.
//!
//! A counting global allocator counts, on this test's thread only, every allocation and
//! reallocation made while a step runs. The three benchmark workloads (`backprop bench`), and
//! two networks with every other layer kind, are trained on real MNIST batches for a few steps (the first steps size the layers' buffers,
//! the optimizer's moments and the product's packing space), then each further step must make
//! no allocation at all. One thread: a second thread is a spawned thread, which allocates
//! (see `parallel.rs`).
//!
//! The batch itself is assembled before the step is counted: each step's images are new
//! memory, handed to the network, which keeps them for backward.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use backprop::layers::{Input, Targets};
use backprop::train::{Model, TrainConfig};
use backprop::{Activation, Rng, optim, train};

struct Counting;

thread_local! {
    /// Whether this thread's allocations are being counted, and how many there were.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

fn note(bytes: usize) {
    // try_with: the thread's locals may be gone while it exits
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            COUNT.with(|c| {
                let (n, b) = c.get();
                c.set((n + 1, b + bytes));
            });
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations (count, bytes) made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> (usize, usize) {
    COUNT.with(|c| c.set((0, 0)));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    COUNT.with(|c| c.get())
}

/// The three workloads, and two networks with the other layer kinds: dropout, sigmoid, tanh,
/// average pooling with padding, weight decay, AdamW and Momentum. (Batch normalization is the
/// one layer left that allocates: its forward and backward are ndarray expressions, 21
/// temporaries a layer a step, 200 KB for a 128x64 batch.)
fn networks() -> Vec<(&'static str, TrainConfig)> {
    let mut all = train::workloads(1);
    all.push((
        "MLP with dropout, tanh",
        TrainConfig {
            model: Model::Mlp,
            hidden: vec![64, 64],
            activation: Activation::Tanh,
            dropout: 0.2,
            weight_decay: 0.01,
            optimizer: "adamw".into(),
            lr: 0.001,
            threads: 1,
            ..TrainConfig::default()
        },
    ));
    all.push((
        "described convnet",
        TrainConfig {
            model: Model::Described,
            layers: Some(
                "conv 4 3 pad=1\nsigmoid\npool avg 3 stride=2 pad=1\nconv 4 3 stride=2\nrelu\npool max 2\ndropout 0.1\naffine 20\ntanh\naffine classes".into(),
            ),
            optimizer: "momentum".into(),
            lr: 0.01,
            weight_decay: 0.001,
            batch_size: 20,
            threads: 1,
            ..TrainConfig::default()
        },
    ));
    all
}

#[test]
fn a_steady_state_training_step_allocates_nothing() {
    let data = common::mnist();
    let mut rng = Rng::new(7);
    for (name, cfg) in networks() {
        let mut net = train::build(&cfg, &data, &mut rng).unwrap();
        net.set_threads(1);
        let mut opt = optim::by_name::<f32>(&cfg.optimizer, cfg.lr).unwrap();
        let counts: Vec<(usize, usize)> = (0..8)
            .map(|_| {
                let indices: Vec<usize> = (0..cfg.batch_size)
                    .map(|_| rng.below(data.train.len()))
                    .collect();
                // the dense layers take the batch as non-zero entries, as training does; the
                // convolution takes images
                let (x, t) = match cfg.model {
                    Model::SimpleCnn | Model::Described => {
                        let (x, t) = data.train.batch::<f32>(&indices);
                        (Input::from(x), t)
                    }
                    _ => data.train.input_batch::<f32>(&indices),
                };
                allocations(|| {
                    let loss = net.backprop(x, Targets::Labels(&t));
                    assert!(loss.is_finite());
                    net.update(opt.as_mut());
                })
            })
            .collect();
        assert!(
            counts[0].0 > 0,
            "{name}: the first step must be seen allocating its buffers (is the allocator counting?)"
        );
        for (step, &(n, bytes)) in counts.iter().enumerate().skip(2) {
            assert_eq!(
                n, 0,
                "{name}: step {step} allocated {n} times ({bytes} bytes); all steps: {counts:?}"
            );
        }
    }
}
