// Reports source functions over the line limit, files over the line limit and module-level mutable state.
// A constant lookup table is typed ReadonlySet/ReadonlyMap, so the compiler keeps it constant.
// Used by test/structure.test.ts and by hand: `node scripts/structure.mjs`.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import ts from "typescript";

export const MAX_FUNCTION_LINES = 80;
export const MAX_FILE_LINES = 400;

function listSources(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...listSources(p));
    else if (p.endsWith(".ts") && !p.endsWith(".d.ts")) out.push(p);
  }
  return out.sort();
}

const MUTABLE_CTORS = new Set(["Map", "Set", "WeakMap", "WeakSet", "Array"]);

function isMutableInit(init) {
  if (!init) return false;
  if (ts.isNewExpression(init) && ts.isIdentifier(init.expression)) return MUTABLE_CTORS.has(init.expression.text);
  if (ts.isArrayLiteralExpression(init)) return false; // constant tables are fine; `as const` or frozen by convention
  return false;
}

function functionName(node, sf) {
  if (node.name && ts.isIdentifier(node.name)) return node.name.text;
  if (node.name) return node.name.getText(sf);
  const parent = node.parent;
  if (parent && ts.isVariableDeclaration(parent) && ts.isIdentifier(parent.name)) return parent.name.text;
  if (parent && ts.isPropertyAssignment(parent)) return parent.name.getText(sf);
  return "<anonymous>";
}

export function scan(root) {
  const files = listSources(join(root, "src"));
  const longFunctions = [];
  const longFiles = [];
  const mutableState = [];
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    const rel = relative(root, file);
    const lines = text.split("\n").length;
    if (lines > MAX_FILE_LINES) longFiles.push({ file: rel, lines });
    const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
    for (const stmt of sf.statements) {
      if (ts.isVariableStatement(stmt)) {
        const isLet = (stmt.declarationList.flags & ts.NodeFlags.Let) !== 0;
        for (const d of stmt.declarationList.declarations) {
          const readonlyType = d.type && /^Readonly(Set|Map|Array)</.test(d.type.getText(sf));
          if (isLet || (!readonlyType && isMutableInit(d.initializer))) {
            const line = sf.getLineAndCharacterOfPosition(d.getStart(sf)).line + 1;
            mutableState.push({ file: rel, line, name: d.name.getText(sf) });
          }
        }
      }
    }
    const visit = (node) => {
      if (
        ts.isFunctionDeclaration(node) ||
        ts.isMethodDeclaration(node) ||
        ts.isArrowFunction(node) ||
        ts.isFunctionExpression(node) ||
        ts.isConstructorDeclaration(node) ||
        ts.isGetAccessorDeclaration(node)
      ) {
        if (node.body) {
          const start = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line;
          const end = sf.getLineAndCharacterOfPosition(node.end).line;
          const n = end - start + 1;
          if (n > MAX_FUNCTION_LINES) longFunctions.push({ file: rel, line: start + 1, name: functionName(node, sf), lines: n });
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  return { longFunctions, longFiles, mutableState };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = scan(process.cwd());
  for (const f of r.longFunctions.sort((a, b) => b.lines - a.lines)) console.log(`function ${f.lines}\t${f.file}:${f.line} ${f.name}`);
  for (const f of r.longFiles) console.log(`file ${f.lines}\t${f.file}`);
  for (const m of r.mutableState) console.log(`state\t${m.file}:${m.line} ${m.name}`);
  console.log(`${r.longFunctions.length} long functions, ${r.longFiles.length} long files, ${r.mutableState.length} module-level mutable bindings`);
}
