/*
 * Chat templates without a Jinja engine. eng_chat_detect recognises a
 * template by the special tokens it writes, and each family's renderer
 * reproduces what the vendor's template prints for plain conversations
 * (system, user, assistant and tool messages, no tool definitions) with
 * add_generation_prompt set. Where a renderer departs from its template,
 * the comment above it describes how.
 */
#include "engine/eng_chat.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A growable NUL-terminated string; a failed allocation sets OOM and
 * makes every later append a no-op, so callers check once at the end. */
struct sbuf {
    char *data;
    size_t len;
    size_t cap;
    int oom;
};

static void sb_append_n(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;

        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->data, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sb_append(struct sbuf *b, const char *s)
{
    sb_append_n(b, s, strlen(s));
}

/* Hand the string to the caller, or free it and return NULL after an
 * allocation failure. */
static char *sb_finish(struct sbuf *b)
{
    if (b->oom) {
        free(b->data);
        return NULL;
    }
    if (!b->data)
        sb_append_n(b, "", 0);
    return b->oom ? NULL : b->data;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

/* Append S without leading and trailing ASCII whitespace, as Jinja's
 * trim filter and Python's str.strip() do for ASCII text. */
static void sb_append_trimmed(struct sbuf *b, const char *s)
{
    size_t n = strlen(s);

    while (n > 0 && is_space(*s)) {
        s++;
        n--;
    }
    while (n > 0 && is_space(s[n - 1]))
        n--;
    sb_append_n(b, s, n);
}

static const char *content_of(const struct eng_chat_msg *m)
{
    return m->content ? m->content : "";
}

static int role_is(const struct eng_chat_msg *m, const char *role)
{
    const char *r = m->role ? m->role : "user";

    /* OpenAI's "developer" role replaced "system" for newer models; the
     * templates only know "system". */
    if (strcmp(role, "system") == 0 && strcmp(r, "developer") == 0)
        return 1;
    return strcmp(r, role) == 0;
}

/* Content of the leading system message, or NULL when there is none. */
static const char *leading_system(const struct eng_chat_msg *msgs, int n)
{
    return n > 0 && role_is(&msgs[0], "system") ? content_of(&msgs[0])
                                                : NULL;
}

/* Role name as the templates print it: developer becomes system. */
static const char *role_name(const struct eng_chat_msg *m)
{
    if (!m->role || role_is(m, "system"))
        return m->role ? "system" : "user";
    return m->role;
}

/*
 * ChatML as Qwen2.5 and Qwen3 write it. Tool results are wrapped in
 * <tool_response> inside a user turn, consecutive ones sharing the turn.
 * NOTE: Qwen2.5's template inserts "You are Qwen, created by Alibaba
 * Cloud. You are a helpful assistant." when no system message is given;
 * Qwen3's does not, and this renderer does not, since the two share the
 * family. Qwen3's removal of <think> blocks from earlier assistant turns
 * is not reproduced either.
 */
static void render_chatml(struct sbuf *b, const struct eng_chat_msg *msgs,
                          int n)
{
    for (int i = 0; i < n; i++) {
        const struct eng_chat_msg *m = &msgs[i];

        if (role_is(m, "tool")) {
            if (i == 0 || !role_is(&msgs[i - 1], "tool"))
                sb_append(b, "<|im_start|>user");
            sb_append(b, "\n<tool_response>\n");
            sb_append(b, content_of(m));
            sb_append(b, "\n</tool_response>");
            if (i == n - 1 || !role_is(&msgs[i + 1], "tool"))
                sb_append(b, "<|im_end|>\n");
            continue;
        }
        sb_append(b, "<|im_start|>");
        sb_append(b, role_name(m));
        sb_append(b, "\n");
        sb_append(b, content_of(m));
        sb_append(b, "<|im_end|>\n");
    }
    sb_append(b, "<|im_start|>assistant\n");
}

/*
 * Llama 2 chat: the first system message goes inside the first [INST]
 * between <<SYS>> markers; every later user turn starts with the BOS
 * text "<s>" and every assistant turn ends with "</s>", which the
 * tokenizer turns into ids when it parses special tokens.
 */
static void render_llama2(struct sbuf *b, const struct eng_chat_msg *msgs,
                          int n)
{
    const char *sys = leading_system(msgs, n);
    int start = sys ? 1 : 0;
    for (int i = start; i < n; i++) {
        const struct eng_chat_msg *m = &msgs[i];
        struct sbuf content = { 0 };

        if (i == start && sys) {
            sb_append(&content, "<<SYS>>\n");
            sb_append(&content, sys);
            sb_append(&content, "\n<</SYS>>\n\n");
        }
        sb_append(&content, content_of(m));
        if (content.oom) {
            b->oom = 1;
            free(content.data);
            return;
        }
        if (role_is(m, "assistant")) {
            sb_append(b, " ");
            sb_append_trimmed(b, content.data);
            sb_append(b, " </s>");
        } else {
            if (i > start)
                sb_append(b, "<s>");
            sb_append(b, "[INST] ");
            sb_append_trimmed(b, content.data);
            sb_append(b, " [/INST]");
        }
        free(content.data);
    }
}

/*
 * Llama 3.1: the system header always carries the knowledge cutoff and
 * the template's default date "26 Jul 2024"; contents are trimmed.
 * NOTE: Llama 3.0's template has no date lines, and Llama 3.2's writes
 * the current date; both get the 3.1 text here.
 */
static void render_llama3(struct sbuf *b, const struct eng_chat_msg *msgs,
                          int n)
{
    int start = 0;

    sb_append(b, "<|start_header_id|>system<|end_header_id|>\n\n");
    sb_append(b, "Cutting Knowledge Date: December 2023\n");
    sb_append(b, "Today Date: 26 Jul 2024\n\n");
    if (n > 0 && role_is(&msgs[0], "system")) {
        sb_append_trimmed(b, content_of(&msgs[0]));
        start = 1;
    }
    sb_append(b, "<|eot_id|>");
    for (int i = start; i < n; i++) {
        const struct eng_chat_msg *m = &msgs[i];

        if (role_is(m, "tool") || role_is(m, "ipython")) {
            sb_append(b, "<|start_header_id|>ipython<|end_header_id|>\n\n");
            sb_append(b, content_of(m));
        } else {
            sb_append(b, "<|start_header_id|>");
            sb_append(b, role_name(m));
            sb_append(b, "<|end_header_id|>\n\n");
            sb_append_trimmed(b, content_of(m));
        }
        sb_append(b, "<|eot_id|>");
    }
    sb_append(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/*
 * Mistral (the Nemo template, no spaces around [INST]): the system
 * message is prepended to the last user message, as the template does.
 * NOTE: the template rejects system messages after the first, and tool
 * results without a call id. Here a later system message is rendered as
 * an [INST] turn, and a tool result as
 * [TOOL_RESULTS]content[/TOOL_RESULTS].
 */
static void render_mistral(struct sbuf *b, const struct eng_chat_msg *msgs,
                           int n)
{
    const char *sys = leading_system(msgs, n);
    int start = sys ? 1 : 0;
    for (int i = start; i < n; i++) {
        const struct eng_chat_msg *m = &msgs[i];

        if (role_is(m, "assistant")) {
            sb_append(b, content_of(m));
            sb_append(b, "</s>");
        } else if (role_is(m, "tool")) {
            sb_append(b, "[TOOL_RESULTS]");
            sb_append(b, content_of(m));
            sb_append(b, "[/TOOL_RESULTS]");
        } else {
            sb_append(b, "[INST]");
            if (i == n - 1 && sys && role_is(m, "user")) {
                sb_append(b, sys);
                sb_append(b, "\n\n");
            }
            sb_append(b, content_of(m));
            sb_append(b, "[/INST]");
        }
    }
}

/*
 * Gemma: "assistant" is "model" and contents are trimmed. The template
 * rejects a system message. Like llama.cpp's built-in Gemma format, this
 * renderer instead puts the trimmed system text and a blank line at the
 * start of the next user turn. Tool results are rendered as user turns.
 */
static void render_gemma(struct sbuf *b, const struct eng_chat_msg *msgs,
                         int n)
{
    const char *sys = NULL;

    for (int i = 0; i < n; i++) {
        const struct eng_chat_msg *m = &msgs[i];
        int model = role_is(m, "assistant");

        if (role_is(m, "system")) {
            sys = content_of(m);
            continue;
        }
        sb_append(b, model ? "<start_of_turn>model\n"
                           : "<start_of_turn>user\n");
        if (sys && !model) {
            sb_append_trimmed(b, sys);
            sb_append(b, "\n\n");
            sys = NULL;
        }
        sb_append_trimmed(b, content_of(m));
        sb_append(b, "<end_of_turn>\n");
    }
    sb_append(b, "<start_of_turn>model\n");
}

/*
 * Phi-3: <|role|>, newline, content, <|end|>, newline. An empty system
 * message is left out, as in the template. The template drops tool
 * messages; here they become user turns so their content is not lost.
 */
static void render_phi3(struct sbuf *b, const struct eng_chat_msg *msgs,
                        int n)
{
    for (int i = 0; i < n; i++) {
        const struct eng_chat_msg *m = &msgs[i];

        if (role_is(m, "system")) {
            if (content_of(m)[0] == '\0')
                continue;
            sb_append(b, "<|system|>\n");
        } else if (role_is(m, "assistant")) {
            sb_append(b, "<|assistant|>\n");
        } else {
            sb_append(b, "<|user|>\n");
        }
        sb_append(b, content_of(m));
        sb_append(b, "<|end|>\n");
    }
    sb_append(b, "<|assistant|>\n");
}

/* DeepSeek's markers use U+FF5C (fullwidth vertical bar) and U+2581. */
#define DS_BAR "\xef\xbd\x9c"
#define DS_SEP "\xe2\x96\x81"
#define DS_USER "<" DS_BAR "User" DS_BAR ">"
#define DS_ASSISTANT "<" DS_BAR "Assistant" DS_BAR ">"
#define DS_EOS "<" DS_BAR "end" DS_SEP "of" DS_SEP "sentence" DS_BAR ">"
#define DS_OUTPUTS_BEGIN "<" DS_BAR "tool" DS_SEP "outputs" DS_SEP "begin" \
                         DS_BAR ">"
#define DS_OUTPUTS_END "<" DS_BAR "tool" DS_SEP "outputs" DS_SEP "end" \
                       DS_BAR ">"
#define DS_OUTPUT_BEGIN "<" DS_BAR "tool" DS_SEP "output" DS_SEP "begin" \
                        DS_BAR ">"
#define DS_OUTPUT_END "<" DS_BAR "tool" DS_SEP "output" DS_SEP "end" \
                      DS_BAR ">"

/*
 * DeepSeek R1: the last system message comes first with no markers, and
 * earlier assistant turns keep only the text after </think>. Tool results
 * use the template's tool output markers. As in the template, only the
 * first tool result of the conversation opens the outputs block. After a
 * trailing tool result, no assistant turn is opened.
 */
static void render_deepseek_r1(struct sbuf *b,
                               const struct eng_chat_msg *msgs, int n)
{
    int in_tool = 0, output_first = 1;

    for (int i = n - 1; i >= 0; i--) {
        if (role_is(&msgs[i], "system")) {
            sb_append(b, content_of(&msgs[i]));
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        const struct eng_chat_msg *m = &msgs[i];
        const char *c = content_of(m);

        if (role_is(m, "user")) {
            in_tool = 0;
            sb_append(b, DS_USER);
            sb_append(b, c);
        } else if (role_is(m, "assistant") && in_tool) {
            sb_append(b, DS_OUTPUTS_END);
            sb_append(b, c);
            sb_append(b, DS_EOS);
            in_tool = 0;
        } else if (role_is(m, "assistant")) {
            const char *think = strstr(c, "</think>");

            /* Keep the text after the last </think>. */
            while (think) {
                c = think + strlen("</think>");
                think = strstr(c, "</think>");
            }
            sb_append(b, DS_ASSISTANT);
            sb_append(b, c);
            sb_append(b, DS_EOS);
        } else if (role_is(m, "tool")) {
            in_tool = 1;
            sb_append(b, output_first ? DS_OUTPUTS_BEGIN : "\n");
            output_first = 0;
            sb_append(b, DS_OUTPUT_BEGIN);
            sb_append(b, c);
            sb_append(b, DS_OUTPUT_END);
        }
    }
    if (in_tool)
        sb_append(b, DS_OUTPUTS_END);
    else
        sb_append(b, DS_ASSISTANT "<think>\n");
}

/*
 * Granite 3.x: <|start_of_role|>role<|end_of_role|>content<|end_of_text|>
 * and a newline. Without a system message the template writes a default
 * one with today's date; this renderer does the same, with the UTC date.
 * NOTE: the template opens the assistant turn only after a last
 * non-system message; here it is always opened.
 */
static void render_granite(struct sbuf *b, const struct eng_chat_msg *msgs,
                           int n)
{
    int start = 0;

    sb_append(b, "<|start_of_role|>system<|end_of_role|>");
    if (n > 0 && role_is(&msgs[0], "system")) {
        sb_append(b, content_of(&msgs[0]));
        start = 1;
    } else {
        char date[64];
        time_t now = time(NULL);
        struct tm tm;

        gmtime_r(&now, &tm);
        if (strftime(date, sizeof(date), "%B %d, %Y", &tm) == 0)
            date[0] = '\0';
        sb_append(b, "Knowledge Cutoff Date: April 2024. Today's Date: ");
        sb_append(b, date);
        sb_append(b, ". You are Granite, developed by IBM. "
                     "You are a helpful AI assistant.");
    }
    sb_append(b, "<|end_of_text|>\n");
    for (int i = start; i < n; i++) {
        sb_append(b, "<|start_of_role|>");
        sb_append(b, role_name(&msgs[i]));
        sb_append(b, "<|end_of_role|>");
        sb_append(b, content_of(&msgs[i]));
        sb_append(b, "<|end_of_text|>\n");
    }
    sb_append(b, "<|start_of_role|>assistant<|end_of_role|>");
}

static const char smollm3_think_default[] =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face. "
    "Your role as an assistant involves thoroughly exploring questions "
    "through a systematic thinking process before providing the final "
    "precise and accurate solutions. This requires engaging in a "
    "comprehensive cycle of analysis, summarizing, exploration, "
    "reassessment, reflection, backtracking, and iteration to develop "
    "well-considered thinking process. Please structure your response into "
    "two main sections: Thought and Solution using the specified format: "
    "<think> Thought section </think> Solution section. In the Thought "
    "section, detail your reasoning process in steps. Each step should "
    "include detailed considerations such as analysing questions, "
    "summarizing relevant findings, brainstorming new ideas, verifying the "
    "accuracy of the current steps, refining any errors, and revisiting "
    "previous steps. In the Solution section, based on various attempts, "
    "explorations, and reflections from the Thought section, "
    "systematically present the final solution that you deem correct. The "
    "Solution section should be logical, accurate, and concise and detail "
    "necessary steps needed to reach the conclusion.\n\n";

/* Append S with every occurrence of "/no_think" and then of "/think"
 * removed and trailing whitespace stripped, as SmolLM3's template
 * derives its custom instructions from the system message. */
static void sb_append_smollm3_instructions(struct sbuf *b, const char *s)
{
    struct sbuf t1 = { 0 }, t2 = { 0 };
    const char *p, *q;
    size_t n;

    for (p = s; (q = strstr(p, "/no_think")); p = q + strlen("/no_think"))
        sb_append_n(&t1, p, (size_t)(q - p));
    sb_append(&t1, p);
    for (p = t1.data; p && (q = strstr(p, "/think"));
         p = q + strlen("/think"))
        sb_append_n(&t2, p, (size_t)(q - p));
    if (p)
        sb_append(&t2, p);
    if (t1.oom || t2.oom) {
        b->oom = 1;
    } else {
        n = t2.len;
        while (n > 0 && is_space(t2.data[n - 1]))
            n--;
        if (n > 0) {
            sb_append_n(b, t2.data, n);
            sb_append(b, "\n\n");
        }
    }
    free(t1.data);
    free(t2.data);
}

/*
 * SmolLM3: ChatML with a generated system block (metadata, reasoning
 * mode, custom instructions). A first system message containing
 * "/no_think" switches thinking off; then assistant turns and the
 * generation prompt carry an empty <think> block. System messages after
 * the first are dropped and tool results become user turns, as in the
 * template.
 */
static void render_smollm3(struct sbuf *b, const struct eng_chat_msg *msgs,
                           int n)
{
    const char *sys = leading_system(msgs, n);
    int think = !(sys && strstr(sys, "/no_think"));
    size_t before;
    sb_append(b, "<|im_start|>system\n## Metadata\n\n"
                 "Knowledge Cutoff Date: June 2025\n");
    sb_append(b, think ? "Reasoning Mode: /think\n\n"
                       : "Reasoning Mode: /no_think\n\n");
    sb_append(b, "## Custom Instructions\n\n");
    before = b->len;
    if (sys)
        sb_append_smollm3_instructions(b, sys);
    if (b->len == before && !b->oom)
        sb_append(b, think ? smollm3_think_default
                           : "You are a helpful AI assistant named SmolLM, "
                             "trained by Hugging Face.\n\n");
    sb_append(b, "<|im_end|>\n");
    for (int i = 0; i < n; i++) {
        const struct eng_chat_msg *m = &msgs[i];
        const char *c = content_of(m);

        if (role_is(m, "user") || role_is(m, "tool")) {
            sb_append(b, "<|im_start|>user\n");
            sb_append(b, c);
            sb_append(b, "<|im_end|>\n");
        } else if (role_is(m, "assistant")) {
            while (*c == '\n')
                c++;
            sb_append(b, "<|im_start|>assistant\n");
            if (!think)
                sb_append(b, "<think>\n\n</think>\n");
            sb_append(b, c);
            sb_append(b, "<|im_end|>\n");
        }
    }
    sb_append(b, "<|im_start|>assistant\n");
    if (!think)
        sb_append(b, "<think>\n\n</think>\n");
}

/* The plain format: see ENG_CHAT_PLAIN in eng_chat.h. */
static void render_plain(struct sbuf *b, const struct eng_chat_msg *msgs,
                         int n)
{
    for (int i = 0; i < n; i++) {
        const struct eng_chat_msg *m = &msgs[i];

        if (role_is(m, "system"))
            sb_append(b, "System: ");
        else if (role_is(m, "assistant"))
            sb_append(b, "Assistant: ");
        else if (role_is(m, "tool"))
            sb_append(b, "Tool: ");
        else
            sb_append(b, "User: ");
        sb_append(b, content_of(m));
        sb_append(b, "\n");
    }
    sb_append(b, "Assistant:");
}

static const char *const family_names[ENG_CHAT_N_FAMILIES] = {
    [ENG_CHAT_CHATML] = "chatml",
    [ENG_CHAT_LLAMA2] = "llama2",
    [ENG_CHAT_LLAMA3] = "llama3",
    [ENG_CHAT_MISTRAL] = "mistral",
    [ENG_CHAT_GEMMA] = "gemma",
    [ENG_CHAT_PHI3] = "phi3",
    [ENG_CHAT_DEEPSEEK_R1] = "deepseek-r1",
    [ENG_CHAT_GRANITE] = "granite",
    [ENG_CHAT_SMOLLM3] = "smollm3",
    [ENG_CHAT_PLAIN] = "plain",
};

const char *eng_chat_name(enum eng_chat_family family)
{
    if (family < 0 || family >= ENG_CHAT_N_FAMILIES)
        return "unknown";
    return family_names[family];
}

enum eng_chat_family eng_chat_from_name(const char *name)
{
    if (!name)
        return ENG_CHAT_UNKNOWN;
    for (int i = 0; i < ENG_CHAT_N_FAMILIES; i++)
        if (strcmp(name, family_names[i]) == 0)
            return (enum eng_chat_family)i;
    return ENG_CHAT_UNKNOWN;
}

/*
 * The checks run from the most specific marker to the least: SmolLM3
 * also writes <|im_start|>, and a Llama 2 template is a Mistral one
 * plus <<SYS>>.
 */
enum eng_chat_family eng_chat_detect(const char *tmpl)
{
    if (!tmpl)
        return ENG_CHAT_UNKNOWN;
    if (strstr(tmpl, "<|im_start|>")) {
        if (strstr(tmpl, "Reasoning Mode") || strstr(tmpl, "SmolLM"))
            return ENG_CHAT_SMOLLM3;
        return ENG_CHAT_CHATML;
    }
    if (strstr(tmpl, "<|start_header_id|>"))
        return ENG_CHAT_LLAMA3;
    if (strstr(tmpl, DS_USER))
        return ENG_CHAT_DEEPSEEK_R1;
    if (strstr(tmpl, "<|start_of_role|>"))
        return ENG_CHAT_GRANITE;
    if (strstr(tmpl, "<start_of_turn>"))
        return ENG_CHAT_GEMMA;
    if (strstr(tmpl, "<|user|>") && strstr(tmpl, "<|end|>"))
        return ENG_CHAT_PHI3;
    if (strstr(tmpl, "[INST]")) {
        if (strstr(tmpl, "<<SYS>>"))
            return ENG_CHAT_LLAMA2;
        return ENG_CHAT_MISTRAL;
    }
    return ENG_CHAT_UNKNOWN;
}

char *eng_chat_render(enum eng_chat_family family,
                      const struct eng_chat_msg *msgs, int n)
{
    struct sbuf b = { 0 };

    if (n < 0 || (n > 0 && !msgs))
        return NULL;
    switch (family) {
    case ENG_CHAT_CHATML:      render_chatml(&b, msgs, n); break;
    case ENG_CHAT_LLAMA2:      render_llama2(&b, msgs, n); break;
    case ENG_CHAT_LLAMA3:      render_llama3(&b, msgs, n); break;
    case ENG_CHAT_MISTRAL:     render_mistral(&b, msgs, n); break;
    case ENG_CHAT_GEMMA:       render_gemma(&b, msgs, n); break;
    case ENG_CHAT_PHI3:        render_phi3(&b, msgs, n); break;
    case ENG_CHAT_DEEPSEEK_R1: render_deepseek_r1(&b, msgs, n); break;
    case ENG_CHAT_GRANITE:     render_granite(&b, msgs, n); break;
    case ENG_CHAT_SMOLLM3:     render_smollm3(&b, msgs, n); break;
    case ENG_CHAT_PLAIN:       render_plain(&b, msgs, n); break;
    default:
        return NULL;
    }
    return sb_finish(&b);
}
