// Validate an AsyncAPI document with the official parser; print its diagnostics as JSON.
// Usage: node validate.mjs asyncapi.json  (exit 0; the Python test judges the diagnostics)
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const text = await readFile(process.argv[2], "utf8");
const parser = new Parser();
const { document, diagnostics } = await parser.parse(text);
const severities = ["error", "warning", "info", "hint"];
const out = diagnostics.map((d) => ({
  code: String(d.code),
  severity: severities[d.severity] ?? String(d.severity),
  message: d.message,
  path: d.path.join("/"),
}));
process.stdout.write(JSON.stringify({ parsed: document !== undefined, diagnostics: out }) + "\n");
