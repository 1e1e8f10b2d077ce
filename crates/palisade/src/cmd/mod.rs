pub mod sandbox;
pub mod vault;
