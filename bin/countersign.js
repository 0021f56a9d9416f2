#!/usr/bin/env node
// The `countersign` command: runs the TypeScript CLI through tsx on the project's Node 22 runtime.
import { register } from "tsx/esm/api";

register();
process.env.COUNTERSIGN_CLI = "1";
await import("../sts/src/cli.ts");
