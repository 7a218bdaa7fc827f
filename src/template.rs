//! minijinja templating with strict undefined: a missing variable is an
//! error, never an empty string.
