pub mod fsmeta;
pub mod patterns;
