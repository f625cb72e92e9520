//! Data sets: the IDX format (MNIST, Fashion-MNIST) and folders of images, kept in memory as
//! bytes and converted to floats one mini-batch at a time.

pub mod classes;
pub mod folder;
pub mod idx;
mod mnist;

#[cfg(test)]
pub(crate) use mnist::pixel_table;
pub use mnist::{DENSE_BATCH_ZERO_FRACTION, Dataset, Mnist};
