//! The progress API: runners post verified progress here, and it reaches job status at a bounded rate.
