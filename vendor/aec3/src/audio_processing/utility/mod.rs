pub mod cascaded_biquad_filter;
