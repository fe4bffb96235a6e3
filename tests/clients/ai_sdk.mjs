// One turn through the Vercel AI SDK (`ai` + `@ai-sdk/openai` / `@ai-sdk/anthropic`), unchanged,
// pointed at the gateway; driven by tests/python/test_sdk_clients.py.
//
//   node ai_sdk.mjs GATEWAY_URL MODEL_KIND MODEL MODE PROMPT
//
// MODEL_KIND: openai-chat (Chat Completions), openai-responses (Responses API) or anthropic
// (Messages). MODE: plain (generateText), stream (streamText) or tool (generateText with a
// `get_weather` tool the SDK runs itself, then the final answer). Prints one JSON line: the
// text, the tool calls and results the SDK saw, the usage it read and the stream's parts.

import { generateText, stepCountIs, streamText, tool } from "ai";
import { createAnthropic } from "@ai-sdk/anthropic";
import { createOpenAI } from "@ai-sdk/openai";
import { z } from "zod";

const [gateway, kind, modelName, mode, prompt] = process.argv.slice(2);
const apiKey = "caller-key";

function model() {
  switch (kind) {
    case "openai-chat":
      return createOpenAI({ baseURL: `${gateway}/v1`, apiKey }).chat(modelName);
    case "openai-responses":
      return createOpenAI({ baseURL: `${gateway}/v1`, apiKey }).responses(modelName);
    case "anthropic":
      return createAnthropic({ baseURL: `${gateway}/v1`, apiKey }).messages(modelName);
    default:
      throw new Error(`unknown model kind ${kind}`);
  }
}

const tools = {
  get_weather: tool({
    description: "The current weather in a city.",
    inputSchema: z.object({ city: z.string().describe("The city") }),
    execute: async ({ city }) => `weather-7f3a in ${city}: sunny, 21 C`,
  }),
};

const out = { text: "", toolCalls: [], toolResults: [], usage: null, parts: 0 };
if (mode === "plain") {
  const r = await generateText({ model: model(), prompt, maxRetries: 0 });
  out.text = r.text;
  out.usage = r.usage;
  out.finishReason = r.finishReason;
} else if (mode === "stream") {
  const r = streamText({
    model: model(),
    prompt,
    maxRetries: 0,
    onError: ({ error }) => {
      throw error;
    },
  });
  for await (const delta of r.textStream) {
    out.text += delta;
    out.parts += 1;
  }
  out.usage = await r.usage;
  out.finishReason = await r.finishReason;
} else if (mode === "tool") {
  const r = await generateText({
    model: model(),
    prompt,
    tools,
    stopWhen: stepCountIs(3),
    maxRetries: 0,
  });
  out.text = r.text;
  out.usage = r.totalUsage;
  out.finishReason = r.finishReason;
  for (const step of r.steps) {
    for (const c of step.toolCalls) out.toolCalls.push({ name: c.toolName, input: c.input });
    for (const t of step.toolResults) out.toolResults.push({ name: t.toolName, output: t.output });
  }
} else {
  throw new Error(`unknown mode ${mode}`);
}
process.stdout.write(JSON.stringify(out) + "\n");
