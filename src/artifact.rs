//! Published artifacts: atomic writes into the output dir, `NAME.sha256`
//! files and the `manifest.json` index.
