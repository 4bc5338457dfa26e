//! Read a real checkpoint: its tensor table grouped by model component (embeddings,
//! PLE, decoder layers, experts, LM head, encoders) with dtypes and exact stored bytes,
//! plus the architecture inferred from it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dhurandhar_checkpoint::{open_checkpoint, Component, TensorEntry};
use dhurandhar_model::ModelArchitecture;
use serde::Serialize;

use crate::Result;

/// Version of the [`InspectReport`] JSON document.
pub const SCHEMA_VERSION: u32 = 1;

/// What to inspect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InspectOptions {
    /// A `.gguf`, `.safetensors`, `model.safetensors.index.json`, `config.json`, or a
    /// model directory. Anything else that is not a regular file (a FIFO, a device) is
    /// refused rather than read.
    pub path: PathBuf,
}

/// Stored bytes of one model component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentRow {
    pub component: Component,
    pub tensors: usize,
    pub bytes: u64,
    /// Stored bytes per dtype within the component.
    pub dtypes: BTreeMap<String, u64>,
}

/// The GGUF header fields worth showing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GgufHeader {
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub metadata_keys: usize,
}

/// The `inspect --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub schema_version: u32,
    pub file: String,
    /// `gguf`, `safetensors`, ... (the checkpoint format's name).
    pub format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gguf: Option<GgufHeader>,
    /// The validated architecture, or `None` with `architecture_error` saying why.
    pub architecture: Option<ModelArchitecture>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture_error: Option<String>,
    pub total_tensor_bytes: u64,
    /// Components that hold tensors, in [`Component::ALL`] order.
    pub components: Vec<ComponentRow>,
    pub tensors: Vec<TensorEntry>,
}

/// Read the checkpoint at `opts.path`. Reader errors name the file and the byte
/// offset; an architecture that cannot be inferred is reported, not an error.
pub fn inspect(opts: &InspectOptions) -> Result<InspectReport> {
    let path = &opts.path;
    // A directory is a model directory; anything else must be a regular file, or the
    // reader would block on a FIFO or read a device.
    if !path.is_dir() {
        dhurandhar_io::check_regular(path)?;
    }
    let ck = open_checkpoint(path)?;
    let (architecture, architecture_error) = match ck.architecture() {
        Ok(a) => (Some(a), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(InspectReport {
        schema_version: SCHEMA_VERSION,
        file: path.display().to_string(),
        format: ck.format.name(),
        gguf: ck.gguf.as_ref().map(|g| GgufHeader {
            version: g.version,
            alignment: g.alignment,
            data_offset: g.data_offset,
            metadata_keys: g.metadata.len(),
        }),
        architecture,
        architecture_error,
        total_tensor_bytes: ck.total_tensor_bytes(),
        components: component_rows(&ck.tensors),
        tensors: ck.tensors,
    })
}

/// Group tensors by component, with per-dtype byte totals.
pub fn component_rows(tensors: &[TensorEntry]) -> Vec<ComponentRow> {
    Component::ALL
        .iter()
        .filter_map(|&c| {
            let ts: Vec<&TensorEntry> = tensors.iter().filter(|t| t.component == c).collect();
            if ts.is_empty() {
                return None;
            }
            let mut dtypes = BTreeMap::new();
            for t in &ts {
                *dtypes.entry(t.dtype.clone()).or_insert(0) += t.n_bytes;
            }
            Some(ComponentRow {
                component: c,
                tensors: ts.len(),
                bytes: ts.iter().map(|t| t.n_bytes).sum(),
                dtypes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhurandhar_checkpoint::gguf::{GgmlType, GgufBuilder, GgufValue};

    fn tiny(dir: &std::path::Path) -> PathBuf {
        let b = GgufBuilder::new()
            .kv("general.architecture", GgufValue::String("llama".into()))
            .kv("llama.block_count", GgufValue::U32(1))
            .kv("llama.embedding_length", GgufValue::U32(64))
            .kv("llama.feed_forward_length", GgufValue::U32(128))
            .kv("llama.attention.head_count", GgufValue::U32(4))
            .tensor_filled("token_embd.weight", &[64, 32], GgmlType::Q8_0)
            .tensor_filled("blk.0.attn_q.weight", &[64, 64], GgmlType::Q4_0)
            .tensor_filled("blk.0.attn_norm.weight", &[64], GgmlType::F32);
        let p = dir.join("t.gguf");
        std::fs::write(&p, b.to_bytes().unwrap()).unwrap();
        p
    }

    #[test]
    fn groups_by_component_and_owns_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InspectOptions {
            path: tiny(dir.path()),
        };
        let r = inspect(&opts).unwrap();
        drop(dir);
        assert_eq!(r.format, "gguf");
        assert_eq!(r.tensors.len(), 3);
        assert_eq!(
            r.total_tensor_bytes,
            r.components.iter().map(|c| c.bytes).sum::<u64>()
        );
        let layers = r
            .components
            .iter()
            .find(|c| c.component == Component::DecoderLayers)
            .unwrap();
        assert_eq!(layers.tensors, 2);
        assert_eq!(layers.dtypes.len(), 2);
        assert_eq!(layers.dtypes["F32"], 64 * 4);
        assert_eq!(r.gguf.as_ref().unwrap().metadata_keys, 5);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["tensors"][0]["bytes"], 32 * 34 * 2);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_fifo_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("model.gguf");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let e = inspect(&InspectOptions { path: fifo })
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.gguf") && e.contains("FIFO"), "{e}");
    }
}
