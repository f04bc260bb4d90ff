/*
 * Chat template tests: every vendor template in the reference set is
 * detected as its family, and each family renders a conversation as the
 * template would (expected strings worked out by hand from the Jinja).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/eng_chat.h"

#define TEMPLATE_DIR "../shared/reference/chat-templates/"

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
        }
    }
    fclose(f);
    return buf;
}

static void test_detect_reference_templates(void **state)
{
    static const struct {
        const char *file;
        enum eng_chat_family family;
    } cases[] = {
        { "HuggingFaceTB-SmolLM3-3B.jinja", ENG_CHAT_SMOLLM3 },
        { "Qwen-Qwen2.5-7B-Instruct.jinja", ENG_CHAT_CHATML },
        { "Qwen-Qwen3-0.6B.jinja", ENG_CHAT_CHATML },
        { "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
          ENG_CHAT_DEEPSEEK_R1 },
        { "google-gemma-2-2b-it.jinja", ENG_CHAT_GEMMA },
        { "ibm-granite-granite-3.3-2B-Instruct.jinja", ENG_CHAT_GRANITE },
        { "meta-llama-Llama-3.1-8B-Instruct.jinja", ENG_CHAT_LLAMA3 },
        { "microsoft-Phi-3.5-mini-instruct.jinja", ENG_CHAT_PHI3 },
        { "mistralai-Mistral-Nemo-Instruct-2407.jinja", ENG_CHAT_MISTRAL },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[256];
        char *text;

        snprintf(path, sizeof(path), "%s%s", TEMPLATE_DIR, cases[i].file);
        text = read_text(path);
        if (!text)
            fail_msg("cannot read %s", path);
        if (eng_chat_detect(text) != cases[i].family)
            fail_msg("%s: detected %s, expected %s", cases[i].file,
                     eng_chat_name(eng_chat_detect(text)),
                     eng_chat_name(cases[i].family));
        free(text);
    }
}

static void test_detect_llama2_and_unknown(void **state)
{
    /* The shape of Meta's Llama 2 chat template, shortened. */
    const char *llama2 =
        "{% for message in loop_messages %}{% if loop.index0 == 0 and "
        "system_message != false %}{% set content = '<<SYS>>\\n' + "
        "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% endif %}{{ bos_token + '[INST] ' + content.strip() + "
        "' [/INST]' }}{% endfor %}";

    (void)state;
    assert_int_equal(eng_chat_detect(llama2), ENG_CHAT_LLAMA2);
    assert_int_equal(eng_chat_detect("{{ messages[0].content }}"),
                     ENG_CHAT_UNKNOWN);
    assert_int_equal(eng_chat_detect(""), ENG_CHAT_UNKNOWN);
    assert_int_equal(eng_chat_detect(NULL), ENG_CHAT_UNKNOWN);
}

static void test_name_round_trip(void **state)
{
    (void)state;
    for (int f = 0; f < ENG_CHAT_N_FAMILIES; f++) {
        const char *name = eng_chat_name((enum eng_chat_family)f);

        assert_non_null(name);
        assert_int_equal(eng_chat_from_name(name), f);
    }
    assert_string_equal(eng_chat_name(ENG_CHAT_CHATML), "chatml");
    assert_string_equal(eng_chat_name(ENG_CHAT_LLAMA2), "llama2");
    assert_int_equal(eng_chat_from_name("no-such-family"),
                     ENG_CHAT_UNKNOWN);
    assert_int_equal(eng_chat_from_name(NULL), ENG_CHAT_UNKNOWN);
}

static const struct eng_chat_msg sys_user[] = {
    { "system", "You are terse." },
    { "user", "Hi there" },
};

static void expect_render(enum eng_chat_family family,
                          const struct eng_chat_msg *msgs, int n,
                          const char *expected)
{
    char *got = eng_chat_render(family, msgs, n);

    assert_non_null(got);
    assert_string_equal(got, expected);
    free(got);
}

static void test_render_chatml(void **state)
{
    (void)state;
    expect_render(ENG_CHAT_CHATML, sys_user, 2,
                  "<|im_start|>system\nYou are terse.<|im_end|>\n"
                  "<|im_start|>user\nHi there<|im_end|>\n"
                  "<|im_start|>assistant\n");
}

static void test_render_llama2(void **state)
{
    (void)state;
    expect_render(ENG_CHAT_LLAMA2, sys_user, 2,
                  "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\n"
                  "Hi there [/INST]");
}

static void test_render_llama3(void **state)
{
    (void)state;
    expect_render(ENG_CHAT_LLAMA3, sys_user, 2,
                  "<|start_header_id|>system<|end_header_id|>\n\n"
                  "Cutting Knowledge Date: December 2023\n"
                  "Today Date: 26 Jul 2024\n\n"
                  "You are terse.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\n"
                  "Hi there<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void test_render_mistral(void **state)
{
    (void)state;
    expect_render(ENG_CHAT_MISTRAL, sys_user, 2,
                  "[INST]You are terse.\n\nHi there[/INST]");
}

static void test_render_gemma(void **state)
{
    (void)state;
    expect_render(ENG_CHAT_GEMMA, sys_user, 2,
                  "<start_of_turn>user\nYou are terse.\n\n"
                  "Hi there<end_of_turn>\n<start_of_turn>model\n");
}

static void test_render_phi3(void **state)
{
    (void)state;
    expect_render(ENG_CHAT_PHI3, sys_user, 2,
                  "<|system|>\nYou are terse.<|end|>\n"
                  "<|user|>\nHi there<|end|>\n<|assistant|>\n");
}

static void test_render_deepseek_r1(void **state)
{
    (void)state;
    expect_render(ENG_CHAT_DEEPSEEK_R1, sys_user, 2,
                  "You are terse.<\xef\xbd\x9cUser\xef\xbd\x9c>Hi there"
                  "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c><think>\n");
}

static void test_render_granite(void **state)
{
    (void)state;
    expect_render(ENG_CHAT_GRANITE, sys_user, 2,
                  "<|start_of_role|>system<|end_of_role|>You are terse."
                  "<|end_of_text|>\n"
                  "<|start_of_role|>user<|end_of_role|>Hi there"
                  "<|end_of_text|>\n"
                  "<|start_of_role|>assistant<|end_of_role|>");
}

static void test_render_smollm3(void **state)
{
    (void)state;
    expect_render(ENG_CHAT_SMOLLM3, sys_user, 2,
                  "<|im_start|>system\n## Metadata\n\n"
                  "Knowledge Cutoff Date: June 2025\n"
                  "Reasoning Mode: /think\n\n"
                  "## Custom Instructions\n\n"
                  "You are terse.\n\n<|im_end|>\n"
                  "<|im_start|>user\nHi there<|im_end|>\n"
                  "<|im_start|>assistant\n");
}

static void test_render_plain(void **state)
{
    (void)state;
    expect_render(ENG_CHAT_PLAIN, sys_user, 2,
                  "System: You are terse.\nUser: Hi there\nAssistant:");
}

static const struct eng_chat_msg multi_turn[] = {
    { "system", "  Be brief.  " },
    { "user", " Hello " },
    { "assistant", "Hi." },
    { "user", "Bye" },
};

static void test_render_multi_turn(void **state)
{
    (void)state;
    expect_render(ENG_CHAT_LLAMA2, multi_turn, 4,
                  "[INST] <<SYS>>\n  Be brief.  \n<</SYS>>\n\n Hello "
                  "[/INST] Hi. </s><s>[INST] Bye [/INST]");
    expect_render(ENG_CHAT_LLAMA3, multi_turn, 4,
                  "<|start_header_id|>system<|end_header_id|>\n\n"
                  "Cutting Knowledge Date: December 2023\n"
                  "Today Date: 26 Jul 2024\n\n"
                  "Be brief.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\n"
                  "Hello<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n"
                  "Hi.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\n"
                  "Bye<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
    /* The system text goes only into the last user message. */
    expect_render(ENG_CHAT_MISTRAL, multi_turn, 4,
                  "[INST] Hello [/INST]Hi.</s>"
                  "[INST]  Be brief.  \n\nBye[/INST]");
    expect_render(ENG_CHAT_GEMMA, multi_turn, 4,
                  "<start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n"
                  "<start_of_turn>model\nHi.<end_of_turn>\n"
                  "<start_of_turn>user\nBye<end_of_turn>\n"
                  "<start_of_turn>model\n");
}

static void test_render_without_system(void **state)
{
    const struct eng_chat_msg user_only[] = { { "user", "Hi" } };
    const char *granite_prefix =
        "<|start_of_role|>system<|end_of_role|>Knowledge Cutoff Date: "
        "April 2024. Today's Date: ";
    const char *granite_suffix =
        ". You are Granite, developed by IBM. You are a helpful AI "
        "assistant.<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>"
        "Hi<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>";
    char *got;

    (void)state;
    expect_render(ENG_CHAT_CHATML, user_only, 1,
                  "<|im_start|>user\nHi<|im_end|>\n"
                  "<|im_start|>assistant\n");
    expect_render(ENG_CHAT_PHI3, user_only, 1,
                  "<|user|>\nHi<|end|>\n<|assistant|>\n");
    expect_render(ENG_CHAT_LLAMA3, user_only, 1,
                  "<|start_header_id|>system<|end_header_id|>\n\n"
                  "Cutting Knowledge Date: December 2023\n"
                  "Today Date: 26 Jul 2024\n\n<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\n"
                  "Hi<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");

    got = eng_chat_render(ENG_CHAT_GRANITE, user_only, 1);
    assert_non_null(got);
    assert_memory_equal(got, granite_prefix, strlen(granite_prefix));
    assert_true(strlen(got) > strlen(granite_prefix) +
                                  strlen(granite_suffix));
    assert_string_equal(got + strlen(got) - strlen(granite_suffix),
                        granite_suffix);
    free(got);

    got = eng_chat_render(ENG_CHAT_SMOLLM3, user_only, 1);
    assert_non_null(got);
    assert_non_null(strstr(got, "## Custom Instructions\n\nYou are a "
                                "helpful AI assistant named SmolLM, "
                                "trained by Hugging Face. Your role"));
    assert_non_null(strstr(got, "necessary steps needed to reach the "
                                "conclusion.\n\n<|im_end|>\n<|im_start|>"
                                "user\nHi<|im_end|>\n<|im_start|>"
                                "assistant\n"));
    free(got);
}

static void test_render_smollm3_no_think(void **state)
{
    const struct eng_chat_msg msgs[] = {
        { "system", "Answer in French. /no_think" },
        { "user", "Hi" },
        { "assistant", "\nSalut" },
        { "user", "Bye" },
    };
    const struct eng_chat_msg only_flag[] = {
        { "system", "/no_think" },
        { "user", "Hi" },
    };

    (void)state;
    expect_render(ENG_CHAT_SMOLLM3, msgs, 4,
                  "<|im_start|>system\n## Metadata\n\n"
                  "Knowledge Cutoff Date: June 2025\n"
                  "Reasoning Mode: /no_think\n\n"
                  "## Custom Instructions\n\n"
                  "Answer in French.\n\n<|im_end|>\n"
                  "<|im_start|>user\nHi<|im_end|>\n"
                  "<|im_start|>assistant\n<think>\n\n</think>\n"
                  "Salut<|im_end|>\n"
                  "<|im_start|>user\nBye<|im_end|>\n"
                  "<|im_start|>assistant\n<think>\n\n</think>\n");
    expect_render(ENG_CHAT_SMOLLM3, only_flag, 2,
                  "<|im_start|>system\n## Metadata\n\n"
                  "Knowledge Cutoff Date: June 2025\n"
                  "Reasoning Mode: /no_think\n\n"
                  "## Custom Instructions\n\n"
                  "You are a helpful AI assistant named SmolLM, trained by "
                  "Hugging Face.\n\n<|im_end|>\n"
                  "<|im_start|>user\nHi<|im_end|>\n"
                  "<|im_start|>assistant\n<think>\n\n</think>\n");
}

static void test_render_deepseek_history(void **state)
{
    const struct eng_chat_msg msgs[] = {
        { "user", "2+2?" },
        { "assistant", "<think>\nadd\n</think>\n\n4" },
        { "user", "3+3?" },
    };

    (void)state;
    expect_render(ENG_CHAT_DEEPSEEK_R1, msgs, 3,
                  "<\xef\xbd\x9cUser\xef\xbd\x9c>2+2?"
                  "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>\n\n4"
                  "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence"
                  "\xef\xbd\x9c>"
                  "<\xef\xbd\x9cUser\xef\xbd\x9c>3+3?"
                  "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c><think>\n");
}

static void test_render_chatml_tool(void **state)
{
    const struct eng_chat_msg msgs[] = {
        { "user", "Weather?" },
        { "assistant", "Calling." },
        { "tool", "sunny" },
        { "tool", "20C" },
    };

    (void)state;
    expect_render(ENG_CHAT_CHATML, msgs, 4,
                  "<|im_start|>user\nWeather?<|im_end|>\n"
                  "<|im_start|>assistant\nCalling.<|im_end|>\n"
                  "<|im_start|>user\n<tool_response>\nsunny\n"
                  "</tool_response>\n<tool_response>\n20C\n"
                  "</tool_response><|im_end|>\n"
                  "<|im_start|>assistant\n");
}

static void test_render_developer_is_system(void **state)
{
    const struct eng_chat_msg msgs[] = {
        { "developer", "Rules." },
        { "user", "Hi" },
    };

    (void)state;
    expect_render(ENG_CHAT_CHATML, msgs, 2,
                  "<|im_start|>system\nRules.<|im_end|>\n"
                  "<|im_start|>user\nHi<|im_end|>\n"
                  "<|im_start|>assistant\n");
}

static void test_render_rejects_bad_input(void **state)
{
    (void)state;
    assert_null(eng_chat_render(ENG_CHAT_UNKNOWN, sys_user, 2));
    assert_null(eng_chat_render(ENG_CHAT_N_FAMILIES, sys_user, 2));
    assert_null(eng_chat_render(ENG_CHAT_CHATML, NULL, 2));
    assert_null(eng_chat_render(ENG_CHAT_CHATML, sys_user, -1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_reference_templates),
        cmocka_unit_test(test_detect_llama2_and_unknown),
        cmocka_unit_test(test_name_round_trip),
        cmocka_unit_test(test_render_chatml),
        cmocka_unit_test(test_render_llama2),
        cmocka_unit_test(test_render_llama3),
        cmocka_unit_test(test_render_mistral),
        cmocka_unit_test(test_render_gemma),
        cmocka_unit_test(test_render_phi3),
        cmocka_unit_test(test_render_deepseek_r1),
        cmocka_unit_test(test_render_granite),
        cmocka_unit_test(test_render_smollm3),
        cmocka_unit_test(test_render_plain),
        cmocka_unit_test(test_render_multi_turn),
        cmocka_unit_test(test_render_without_system),
        cmocka_unit_test(test_render_smollm3_no_think),
        cmocka_unit_test(test_render_deepseek_history),
        cmocka_unit_test(test_render_chatml_tool),
        cmocka_unit_test(test_render_developer_is_system),
        cmocka_unit_test(test_render_rejects_bad_input),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
