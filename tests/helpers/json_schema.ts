// A small JSON Schema (2020-12) validator for the subset src/log/schema.json uses: type, enum,
// const, pattern, required, properties, additionalProperties false, items, $ref to $defs,
// minimum/maximum/minItems/minLength, if/then/else, allOf, anyOf, not. An unknown keyword is an
// error, so the schema cannot grow past what this checks without the test noticing.

// deno-lint-ignore no-explicit-any
export type Schema = Record<string, any> | boolean;

const KNOWN = new Set([
  "$schema",
  "$id",
  "$defs",
  "$ref",
  "type",
  "enum",
  "const",
  "pattern",
  "required",
  "properties",
  "additionalProperties",
  "items",
  "minimum",
  "maximum",
  "minItems",
  "minLength",
  "if",
  "then",
  "else",
  "allOf",
  "anyOf",
  "not",
]);

function typeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function typeMatches(value: unknown, type: string): boolean {
  const actual = typeOf(value);
  return actual === type || (type === "number" && actual === "integer");
}

function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Returns the list of violations (empty when `value` is valid). */
export function validate(schema: Schema, value: unknown): string[] {
  if (typeof schema === "boolean" || !schema) {
    throw new Error("Cannot validate: root schema must be an object");
  }
  const root = schema;
  const errors: string[] = [];

  const resolve = (ref: string): Schema => {
    const m = /^#\/\$defs\/([^/]+)$/.exec(ref);
    if (!m || !(m[1] in (root.$defs ?? {}))) throw new Error(`Cannot resolve $ref ${ref}`);
    return root.$defs[m[1]];
  };

  const check = (s: Schema, v: unknown, path: string, out: string[]): void => {
    if (s === true) return;
    if (s === false) {
      out.push(`${path}: not allowed`);
      return;
    }
    for (const key of Object.keys(s)) {
      if (!KNOWN.has(key)) throw new Error(`Cannot validate: unsupported keyword ${key}`);
    }
    if (s.$ref !== undefined) check(resolve(s.$ref), v, path, out);
    if (s.type !== undefined) {
      const types: string[] = Array.isArray(s.type) ? s.type : [s.type];
      if (!types.some((t) => typeMatches(v, t))) {
        out.push(`${path}: expected ${types.join("|")}, got ${typeOf(v)}`);
      }
    }
    if (s.enum !== undefined && !s.enum.some((e: unknown) => deepEqual(e, v))) {
      out.push(`${path}: not one of ${JSON.stringify(s.enum)}`);
    }
    if ("const" in s && !deepEqual(s.const, v)) out.push(`${path}: must be ${JSON.stringify(s.const)}`);
    if (typeof v === "string") {
      if (s.pattern !== undefined && !new RegExp(s.pattern, "u").test(v)) {
        out.push(`${path}: does not match ${s.pattern}`);
      }
      if (s.minLength !== undefined && [...v].length < s.minLength) {
        out.push(`${path}: shorter than ${s.minLength}`);
      }
    }
    if (typeof v === "number") {
      if (s.minimum !== undefined && v < s.minimum) out.push(`${path}: below ${s.minimum}`);
      if (s.maximum !== undefined && v > s.maximum) out.push(`${path}: above ${s.maximum}`);
    }
    if (Array.isArray(v)) {
      if (s.minItems !== undefined && v.length < s.minItems) {
        out.push(`${path}: fewer than ${s.minItems} items`);
      }
      if (s.items !== undefined) v.forEach((item, i) => check(s.items, item, `${path}[${i}]`, out));
    }
    if (typeOf(v) === "object") {
      const obj = v as Record<string, unknown>;
      for (const name of s.required ?? []) if (!(name in obj)) out.push(`${path}: missing ${name}`);
      const props = s.properties ?? {};
      for (const [name, item] of Object.entries(obj)) {
        if (name in props) check(props[name], item, `${path}.${name}`, out);
        else if (s.additionalProperties === false) out.push(`${path}: unexpected property ${name}`);
        else if (typeof s.additionalProperties === "object") {
          check(s.additionalProperties, item, `${path}.${name}`, out);
        }
      }
    }
    for (const sub of s.allOf ?? []) check(sub, v, path, out);
    if (s.anyOf !== undefined) {
      const ok = s.anyOf.some((sub: Schema) => {
        const local: string[] = [];
        check(sub, v, path, local);
        return local.length === 0;
      });
      if (!ok) out.push(`${path}: matches none of anyOf`);
    }
    if (s.not !== undefined) {
      const local: string[] = [];
      check(s.not, v, path, local);
      if (local.length === 0) out.push(`${path}: must not match ${JSON.stringify(s.not)}`);
    }
    if (s.if !== undefined) {
      const local: string[] = [];
      check(s.if, v, path, local);
      if (local.length === 0) {
        if (s.then !== undefined) check(s.then, v, path, out);
      } else if (s.else !== undefined) {
        check(s.else, v, path, out);
      }
    }
  };

  check(root, value, "$", errors);
  return errors;
}
