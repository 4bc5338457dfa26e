//! Writing a GGUF the way every facade job does (quantize, LoRA merge and export): to a
//! temporary file beside the output, committed by rename only once every tensor is
//! written, so a failure or a cancel never leaves a partial file or replaces an input.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use dhurandhar_checkpoint::gguf::GgufValue;
use dhurandhar_checkpoint::gguf_write::{GgufTensorOut, GgufWriter};
use dhurandhar_io::AtomicFile;

use crate::{Error, Result};

/// A GGUF being written atomically: tensor data in the order of the header's tensors,
/// each closed by [`GgufOut::end_tensor`], then [`GgufOut::commit`].
pub(crate) struct GgufOut {
    path: PathBuf,
    w: GgufWriter<BufWriter<AtomicFile>>,
}

impl GgufOut {
    /// Start `path` with this metadata and these tensors (refused onto an input, a FIFO
    /// or a device, as every write is).
    pub(crate) fn create(
        path: &Path,
        metadata: &[(String, GgufValue)],
        tensors: &[GgufTensorOut],
    ) -> Result<GgufOut> {
        let sink = AtomicFile::create(path)?;
        let w = GgufWriter::new(BufWriter::with_capacity(1 << 20, sink), metadata, tensors)
            .map_err(|e| io_error(path, e))?;
        Ok(GgufOut {
            path: path.to_path_buf(),
            w,
        })
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.write_data(bytes).map_err(|e| self.io_error(e))
    }

    pub(crate) fn end_tensor(&mut self) -> Result<()> {
        self.w.end_tensor().map_err(|e| self.io_error(e))
    }

    /// The writer itself, for code that streams into it (its I/O errors are mapped with
    /// [`GgufOut::io_error`]).
    pub(crate) fn writer(&mut self) -> &mut GgufWriter<BufWriter<AtomicFile>> {
        &mut self.w
    }

    /// An I/O error while writing this file, naming it.
    pub(crate) fn io_error(&self, e: std::io::Error) -> Error {
        io_error(&self.path, e)
    }

    /// Finish the file (index, padding), flush, fsync and rename it into place.
    pub(crate) fn commit(self) -> Result<()> {
        let path = self.path;
        let buf = self.w.finish().map_err(|e| io_error(&path, e))?;
        let sink = buf
            .into_inner()
            .map_err(|e| io_error(&path, e.into_error()))?;
        sink.commit()?;
        Ok(())
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::from(dhurandhar_io::IoError::os(path, e))
}
