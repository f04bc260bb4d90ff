/*
 * Token sampler with OpenAI's parameters. Penalties count the tokens the
 * sampler itself has accepted (the completion so far), as OpenAI defines
 * presence and frequency penalties; the prompt is not counted.
 */
#ifndef TAPHOUSE_ENG_SAMPLER_H
#define TAPHOUSE_ENG_SAMPLER_H

#include <stdint.h>

struct eng_logit_bias {
    int32_t id;
    float bias;        /* added to the logit; -100 bans, +100 forces */
};

struct eng_sampler_params {
    float temperature;       /* 0: greedy (argmax, lowest id on a tie) */
    float top_p;             /* 1: off */
    int top_k;               /* 0: off */
    uint64_t seed;
    float presence_penalty;  /* -2 .. 2 */
    float frequency_penalty; /* -2 .. 2 */
    const struct eng_logit_bias *bias;  /* copied by eng_sampler_new */
    int n_bias;
};

struct eng_sampler;

struct eng_sampler *eng_sampler_new(const struct eng_sampler_params *p,
                                    int n_vocab);
void eng_sampler_free(struct eng_sampler *s);

/* Choose the next token from N_VOCAB LOGITS (modified in place). */
int32_t eng_sampler_sample(struct eng_sampler *s, float *logits);
/* Record that ID was emitted, for the penalties. */
void eng_sampler_accept(struct eng_sampler *s, int32_t id);

#endif
