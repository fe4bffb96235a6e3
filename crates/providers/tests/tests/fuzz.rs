//! Every fuzz target over its seed corpus and seeded mutations of it, for a bounded time
//! (see `common::fuzz` for the settings; `make fuzz` runs them longer, and under libFuzzer).

use crate::{
    common::fuzz::{run, Shape},
    targets,
};

macro_rules! fuzz_tests {
    ($($name:ident: $shape:ident,)*) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name), targets::$name, Shape::$shape);
            }
        )*

        /// Each target of the libFuzzer binaries (`fuzz/Cargo.toml`) is run here too.
        #[test]
        fn every_target_is_run() {
            let mut run_here = vec![$(stringify!($name)),*];
            let mut all: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
            run_here.sort_unstable();
            all.sort_unstable();
            assert_eq!(run_here, all);
        }
    };
}

fuzz_tests! {
    sse_framer: Sse,
    json_scanner: Json,
    eventstream: Bytes,
    eventstream_frames: Bytes,
    request_openai: Json,
    request_anthropic: Json,
    request_responses: Json,
    stream_openai: Sse,
    stream_anthropic: Sse,
    stream_gemini: Sse,
    stream_bedrock: Sse,
    response_openai: Json,
    response_anthropic: Json,
    response_gemini: Json,
    response_bedrock: Json,
    response_responses: Json,
    stream_responses: Sse,
    openai_chunk: Json,
    upstream_error: Bytes,
}
