//! `dhurandhar models`: the built-in model registry.

use dhurandhar::catalog;
use dhurandhar_model::ModelArchitecture;

use crate::output::{print_json, print_text};
use crate::render::table;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print `{"models": [...]}` with every field of every built-in model.
    #[arg(long)]
    pub json: bool,

    /// Print the YAML profile of one built-in model (a starting point for your own).
    #[arg(long, value_name = "NAME")]
    pub show: Option<String>,
}

fn features(m: &ModelArchitecture) -> String {
    let mut f = Vec::new();
    if m.local_to_global_ratio > 0 || m.layer_types.is_some() {
        f.push(format!(
            "{}:1 window {}",
            m.local_to_global_ratio.max(1),
            m.sliding_window
        ));
    }
    if m.shared_kv_last_n_layers > 0 {
        f.push(format!("{} shared-KV", m.shared_kv_last_n_layers));
    }
    if m.has_ple {
        f.push(format!("PLE {}", m.ple_hidden_size));
    }
    if m.is_moe {
        f.push(format!("MoE {}/{}", m.num_active_experts, m.num_experts));
    }
    if m.has_mamba {
        f.push(format!("{} SSM", m.mamba_num_layers));
    }
    if !m.embeddings_tied {
        f.push("untied".into());
    }
    f.join(", ")
}

/// The models table and the hint below it.
pub fn render(r: &catalog::ModelsReport) -> String {
    let header = "Model|Family|Params|Layers|Hidden|Heads Q/KV|head_dim|Max ctx|Features";
    let mut t = table(header, &[2, 3, 4, 5, 6, 7]);
    for m in &r.models {
        let hd = if m.global_head_dim() != m.head_dim {
            format!("{}/{}", m.head_dim, m.global_head_dim())
        } else {
            m.head_dim.to_string()
        };
        let layers = if m.num_attention_layers != m.num_hidden_layers {
            format!("{} ({} attn)", m.num_hidden_layers, m.num_attention_layers)
        } else {
            m.num_hidden_layers.to_string()
        };
        let params = if m.is_moe {
            format!("{}B ({}B act)", m.param_count_b, m.active_param_count_b)
        } else {
            format!("{}B", m.param_count_b)
        };
        t.add_row([
            m.name.clone(),
            m.family.clone(),
            params,
            layers,
            m.hidden_size.to_string(),
            format!("{}/{}", m.num_attention_heads, m.num_key_value_heads),
            hd,
            m.max_context_tokens.to_string(),
            features(m),
        ]);
    }
    format!(
        "{t}\n{} built-in models. Use one with `dhurandhar analyze --model NAME`, or pass a YAML profile \
         (`dhurandhar models --show gemma4-e2b` prints one to start from).\n",
        r.models.len()
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(name) = &args.show {
        return print_text(&catalog::model_yaml(name)?);
    }
    let r = catalog::models();
    if args.json {
        return print_json(&r);
    }
    print_text(&render(&r))
}
