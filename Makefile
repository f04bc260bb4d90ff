# taphouse: one C11 binary that serves GGUF models over an OpenAI-style API.
#
#   make          build build/taphouse
#   make deps     install the Debian and npm packages the build and tests use
#   make test     unit tests, then end-to-end tests against the real binary
#   make asan     the same tests built with AddressSanitizer and UBSan

CC      ?= gcc
BUILD   ?= build
ARCH    ?= -march=native
OPT     ?= -O2 -g
SAN     ?=
CFLAGS  += -std=c11 $(OPT) $(ARCH) $(SAN) -Wall -Wextra -Wshadow \
           -D_GNU_SOURCE -pthread -Isrc -I$(BUILD)/gen -MMD -MP
LDFLAGS += $(SAN) -pthread
LIBS    := -lmicrohttpd -lcjson -lsqlite3 -lsodium -lm -ldl

SRCS    := $(shell find src -name '*.c' ! -path src/main.c | sort)
OBJS    := $(patsubst %.c,$(BUILD)/obj/%.o,$(SRCS)) $(BUILD)/obj/gen/schema_sql.o
MIGRATIONS := $(sort $(wildcard schema/*.sql))
UNIT_SRCS  := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))

.PHONY: all deps test unit e2e asan clean
all: $(BUILD)/taphouse

# Tests and the binary link against an archive, so each pulls in only the
# objects it uses.
$(BUILD)/libtaphouse.a: $(OBJS)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/taphouse: $(BUILD)/obj/src/main.o $(BUILD)/libtaphouse.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/gen/schema_sql.c: $(MIGRATIONS) tools/embed_sql.sh
	@mkdir -p $(dir $@)
	sh tools/embed_sql.sh $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/schema_sql.o: $(BUILD)/gen/schema_sql.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libtaphouse.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libtaphouse.a \
	    $(LDFLAGS) $(LIBS) -lcmocka

deps:
	sh tools/install_deps.sh

unit: $(UNIT_BINS)
e2e: $(BUILD)/taphouse

test: all unit
	BUILD=$(BUILD) sh tests/run_all.sh

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# Benchmarks against llama.cpp (bench/README.md). Not part of `all`.
.PHONY: bench
$(BUILD)/gen_model: tools/gen_model.c $(BUILD)/libtaphouse.a
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libtaphouse.a $(LDFLAGS) $(LIBS)

$(BUILD)/bench_engine: bench/bench_engine.c $(BUILD)/libtaphouse.a
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libtaphouse.a $(LDFLAGS) $(LIBS)

bench: $(BUILD)/gen_model $(BUILD)/bench_engine
	BUILD=$(BUILD) sh bench/run.sh

# End-to-end HTTP benchmark against llama.cpp's llama-server
# (bench/README.md). Not part of `all`.
.PHONY: bench-server
bench-server: $(BUILD)/taphouse $(BUILD)/gen_model
	BUILD=$(BUILD) sh bench/bench_server.sh
