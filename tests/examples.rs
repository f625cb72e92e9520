//! The examples that check what they show, run as tests.

#[path = "../examples/custom_layer.rs"]
mod custom_layer;

#[test]
fn a_layer_written_outside_the_crate_checks_trains_saves_and_loads() {
    custom_layer::main().unwrap();
}
