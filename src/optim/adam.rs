//! Adam: momentum and RMSprop together, bias-corrected.

use ndarray::Zip;

use super::{Optimizer, OptimizerState, Slots, no_leftovers};
use crate::Float;
use crate::error::Result;
use crate::kernels::with_avx2;
use crate::layers::Param;
use crate::parallel;

/// Hyperparameters of [`Adam`].
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    /// The book's lr 0.001, beta1 0.9, beta2 0.999; eps 1e-8 (PyTorch's).
    fn default() -> Self {
        AdamConfig {
            lr: 0.001,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam (Kingma and Ba, 2015; the book's `Adam`), as PyTorch computes it:
/// ```text
/// t ← t + 1
/// m ← β₁·m + (1 - β₁)·g            first moment, zero at the start
/// v ← β₂·v + (1 - β₂)·g²           second moment, zero at the start
/// W ← W - lr/(1 - β₁ᵗ) · m / (√v / √(1 - β₂ᵗ) + eps)      bias-corrected
/// ```
#[derive(Clone, Debug)]
pub struct Adam<T: Float = f32> {
    pub config: AdamConfig,
    m: Slots<T>,
    v: Slots<T>,
    steps: u64,
    threads: usize,
}

/// Entries of a parameter from which an update is split over the threads.
/// NOTE: SimpleConvNet's 4320x100 weight (432 000 entries, 7 MB with its gradient and
/// moments) comes back from memory at every step; two cores stream it faster than one.
/// With the helper threads kept (`parallel`), it pays from about 16k entries (a throwaway
/// timing of `Adam::update`, medians of 300: 16 384 entries 13-14 -> 7.5-8.6 µs, W2's
/// 256x256 weight 52 -> 27 µs).
const SPLIT_ENTRIES: usize = 16_384;

/// b1, b2, eps, lr / (1 - b1^t), sqrt(1 - b2^t).
type Consts<T> = (T, T, T, T, T);

/// One entry's Adam step: w, m, v from g.
#[inline(always)]
fn adam_entry<T: Float>(w: &mut T, m: &mut T, v: &mut T, g: T, consts: Consts<T>) {
    let (b1, b2, eps, step_size, sqrt_bc2) = consts;
    *m = b1 * *m + (T::one() - b1) * g; // first moment
    *v = b2 * *v + (T::one() - b2) * g * g; // second moment
    *w = *w - step_size * *m / (v.sqrt() / sqrt_bc2 + eps);
}

/// [`adam_entry`] over slices, compiled for AVX2 as well and picked at run time where the CPU
/// has it (8 entries a vector; no FMA, so the same roundings, the same bits).
/// NOTE: the divisions and the square root bound this loop, not memory: SimpleConvNet's
/// 432 000-entry weight, medians of 380 updates: one thread 345-372 -> 187-190 µs, two threads
/// 192-217 -> 96-110 µs.
fn adam_entries<T: Float>((w, m, v, g): (&mut [T], &mut [T], &mut [T], &[T]), consts: Consts<T>) {
    with_avx2(
        #[inline(always)]
        || {
            for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
                adam_entry(w, m, v, g, consts);
            }
        },
    )
}

impl<T: Float> Adam<T> {
    pub fn new(config: AdamConfig) -> Self {
        Adam {
            config,
            m: Slots::default(),
            v: Slots::default(),
            steps: 0,
            threads: 1,
        }
    }
}

impl<T: Float> Optimizer<T> for Adam<T> {
    fn name(&self) -> &'static str {
        "adam"
    }

    fn begin_step(&mut self) {
        self.steps += 1;
    }

    fn update(&mut self, name: &str, mut p: Param<'_, T>) {
        let c = &self.config;
        let t = self.steps as i32;
        let (b1, b2, eps) = (T::of(c.beta1), T::of(c.beta2), T::of(c.eps));
        // bias corrections of the two moments, folded into the step size and the denominator
        let step_size = T::of(c.lr / (1.0 - c.beta1.powi(t)));
        let sqrt_bc2 = T::of((1.0 - c.beta2.powi(t)).sqrt());
        let m = self.m.get(name, p.grad.shape());
        let v = self.v.get(name, p.grad.shape());
        let consts = (b1, b2, eps, step_size, sqrt_bc2);
        let (threads, len) = (self.threads, m.len());
        if let (Some(w), Some(m), Some(v), Some(g)) = (
            p.value.as_slice_mut(),
            m.as_slice_mut(),
            v.as_slice_mut(),
            p.grad.as_slice(),
        ) {
            if threads == 1 || len < SPLIT_ENTRIES {
                adam_entries((w, m, v, g), consts);
                return;
            }
            let part = len.div_ceil(threads);
            let parts: Vec<_> = w
                .chunks_mut(part)
                .zip(m.chunks_mut(part))
                .zip(v.chunks_mut(part))
                .zip(g.chunks(part))
                .map(|(((w, m), v), g)| (w, m, v, g))
                .collect();
            parallel::map(parts, threads, |p| adam_entries(p, consts));
            return;
        }
        Zip::from(&mut p.value)
            .and(m)
            .and(v)
            .and(&p.grad)
            .for_each(|w, m, v, &g| adam_entry(w, m, v, g, consts));
    }

    fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        let mut state = OptimizerState {
            steps: self.steps,
            ..Default::default()
        };
        self.m.save("m", &mut state);
        self.v.save("v", &mut state);
        state
    }

    fn set_state(&mut self, mut state: OptimizerState<T>) -> Result<()> {
        let (m, v) = (Slots::load("m", &mut state), Slots::load("v", &mut state));
        no_leftovers(self.name(), &state)?;
        (self.m, self.v, self.steps) = (m, v, state.steps);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testing::{assert_close, run, state_round_trips};

    #[test]
    fn matches_pytorch() {
        // torch.optim.Adam(p, lr=0.1, betas=(0.9, 0.999), eps=1e-8), 5 steps: `adam` of the
        // script in optim/mod.rs.
        let expected = [
            0.9721855486293904,
            -0.5029557812950121,
            1.5079636592643417,
            0.492036340735658,
            1.0278144513706096,
            -0.0043581694516796055,
            -0.08846867936516402,
            -1.1991724671318253,
            0.7149672790166881,
        ];
        assert_close(
            &run(
                &mut Adam::new(AdamConfig {
                    lr: 0.1,
                    ..Default::default()
                }),
                5,
            ),
            &expected,
        );
    }

    #[test]
    fn state_round_trips_through_a_checkpoint() {
        state_round_trips(|| Box::new(Adam::new(AdamConfig::default())));
    }
}
