// Node script: runs esbuild's JS API with options given as JSON (works whether or not esbuild's
// install script replaced its launcher with the native binary).
// Usage: node esbuild_build.mjs <path of esbuild/lib/main.js> '<options JSON>'
const [esbuildMain, optionsJson] = process.argv.slice(2);
const esbuild = await import(esbuildMain);
await esbuild.build(JSON.parse(optionsJson));
