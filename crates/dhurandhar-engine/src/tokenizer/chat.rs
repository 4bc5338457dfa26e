//! Chat messages to a prompt with the GGUF's own chat template (`tokenizer.chat_template`,
//! the Jinja text Hugging Face ships), rendered by minijinja with Python's string
//! methods (`.strip()`, `.startswith()`, …) as the templates expect.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::Tokenizer;
use crate::EngineError;

/// Largest template rendered (real ones are a few KiB).
const MAX_TEMPLATE_BYTES: usize = 256 << 10;

/// One chat turn: `role` is `system`, `user` or `assistant` (templates may know more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// `raise_exception(msg)`, which Hugging Face templates call on unsupported input.
fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// Render `template` for `messages`; `bos`/`eos` are the special tokens' texts.
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos: &str,
    eos: &str,
) -> Result<String, EngineError> {
    if template.len() > MAX_TEMPLATE_BYTES {
        return Err(EngineError::Tokenizer(format!(
            "the chat template is {} bytes, more than the {MAX_TEMPLATE_BYTES} read",
            template.len()
        )));
    }
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    let err = |e: Error| EngineError::Tokenizer(format!("chat template: {e}"));
    env.add_template("chat", template).map_err(err)?;
    env.get_template("chat")
        .map_err(err)?
        .render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos,
            eos_token => eos,
        })
        .map_err(err)
}

impl Tokenizer {
    /// The prompt for `messages` by the model's chat template (`None` when the GGUF has
    /// none), ending with the assistant's turn opened when `add_generation_prompt`.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Option<String>, EngineError> {
        let Some(t) = &self.chat_template else {
            return Ok(None);
        };
        let text = |id: Option<u32>| {
            id.map(|i| String::from_utf8_lossy(&self.token_bytes(i, true)).into_owned())
                .unwrap_or_default()
        };
        let (bos, eos) = (text(self.bos), text(self.eos));
        let mut out = render(t, messages, add_generation_prompt, &bos, &eos)?;
        // The encoder adds BOS itself: a template that writes it would double it.
        if self.add_bos && !bos.is_empty() && out.starts_with(&bos) {
            out.drain(..bos.len());
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn chatml_renders_turns_and_the_generation_prompt() {
        let m = [
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello"),
        ];
        assert_eq!(
            render(CHATML, &m, true, "", "").unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(!render(CHATML, &m[..1], false, "", "")
            .unwrap()
            .ends_with("assistant\n"));
    }

    /// Templates use Python's string methods and raise on what they refuse.
    #[test]
    fn python_methods_and_raise_exception() {
        let t = "{{ bos_token }}{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}[{{ m.content.strip() }}]{% endfor %}";
        assert_eq!(
            render(t, &[ChatMessage::new("user", "  x ")], true, "<s>", "</s>").unwrap(),
            "<s>[x]"
        );
        let e = render(t, &[ChatMessage::new("tool", "x")], true, "", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad role tool"), "{e}");
        let e = render("{% for %}", &[], true, "", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("chat template"), "{e}");
    }
}
