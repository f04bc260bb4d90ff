/*
 * Chat templates. A model's Jinja template (tokenizer.chat_template) is
 * not run; it is matched to one of the common families, each rendered by
 * C code that produces the same text the template would.
 */
#ifndef TAPHOUSE_ENG_CHAT_H
#define TAPHOUSE_ENG_CHAT_H

#include <stdbool.h>

enum eng_chat_family {
    ENG_CHAT_UNKNOWN = -1,
    ENG_CHAT_CHATML = 0,     /* <|im_start|>role ... <|im_end|> (Qwen) */
    ENG_CHAT_LLAMA2,         /* [INST] ... [/INST] with <<SYS>> */
    ENG_CHAT_LLAMA3,         /* <|start_header_id|>role<|end_header_id|> */
    ENG_CHAT_MISTRAL,        /* [INST]...[/INST] without <<SYS>> */
    ENG_CHAT_GEMMA,          /* <start_of_turn>user / model */
    ENG_CHAT_PHI3,           /* <|user|> ... <|end|> */
    ENG_CHAT_DEEPSEEK_R1,    /* <｜User｜> ... <｜Assistant｜> */
    ENG_CHAT_GRANITE,        /* <|start_of_role|>role<|end_of_role|> */
    ENG_CHAT_SMOLLM3,        /* ChatML with a metadata system block */
    /*
     * The default for models without a template: one line per message,
     * "System: ", "User: ", "Assistant: " or "Tool: " and the content,
     * each ending in "\n", then "Assistant:" with no trailing space.
     */
    ENG_CHAT_PLAIN,
    ENG_CHAT_N_FAMILIES
};

struct eng_chat_msg {
    const char *role;        /* system, developer, user, assistant, tool */
    const char *content;
};

/* Match a Jinja template's text to a family; ENG_CHAT_UNKNOWN if none. */
enum eng_chat_family eng_chat_detect(const char *tmpl);
/* Family by its name ("chatml", "llama2", ...); ENG_CHAT_UNKNOWN if none. */
enum eng_chat_family eng_chat_from_name(const char *name);
const char *eng_chat_name(enum eng_chat_family family);

/*
 * Render N messages as the prompt text, ending with the opening of the
 * assistant's turn. The text never starts with the BOS token's text: the
 * tokenizer adds BOS. Returns a malloc'd string, or NULL on failure.
 */
char *eng_chat_render(enum eng_chat_family family,
                      const struct eng_chat_msg *msgs, int n);

#endif
