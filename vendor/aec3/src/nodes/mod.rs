pub mod aec3;
pub mod agc2;
pub mod audio;
pub mod hpf;
pub mod ns;
pub mod post_filter;
pub mod resample;
pub mod tap;

mod util;
