/**
 * Licence texts from package metadata (Debian's DEP-5 short names, npm's and
 * Alpine's SPDX-ish strings, Python's License fields and classifiers) as SPDX
 * licence expressions that always validate: a name on the SPDX list that we know
 * stays, a known alias is mapped (`GPL-2+` -> `GPL-2.0-or-later`, `Expat` -> `MIT`),
 * and anything else becomes `LicenseRef-<name>`, which the document then declares
 * in hasExtractedLicensingInfos. Nothing is guessed from licence texts.
 */

/** SPDX identifiers common in distributions and language registries. */
const KNOWN: ReadonlySet<string> = new Set([
  "0BSD", "AFL-2.1", "AGPL-3.0-only", "AGPL-3.0-or-later", "Apache-1.1", "Apache-2.0", "APSL-2.0", "Artistic-1.0", "Artistic-1.0-Perl",
  "Artistic-2.0", "BlueOak-1.0.0", "BSD-1-Clause", "BSD-2-Clause", "BSD-3-Clause", "BSD-4-Clause", "BSL-1.0", "bzip2-1.0.6", "CC-BY-3.0",
  "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC0-1.0", "CDDL-1.0", "CDDL-1.1", "curl", "EPL-1.0", "EPL-2.0", "EUPL-1.2", "FSFAP",
  "FSFUL", "FSFULLR", "FTL", "GFDL-1.2-only", "GFDL-1.2-or-later", "GFDL-1.3-only", "GFDL-1.3-or-later", "GPL-1.0-only", "GPL-1.0-or-later",
  "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later", "HPND", "IJG", "ISC", "LGPL-2.0-only", "LGPL-2.0-or-later",
  "LGPL-2.1-only", "LGPL-2.1-or-later", "LGPL-3.0-only", "LGPL-3.0-or-later", "Libpng", "libtiff", "MIT", "MIT-0", "MPL-1.1", "MPL-2.0",
  "NCSA", "OFL-1.1", "OpenSSL", "PHP-3.01", "PostgreSQL", "PSF-2.0", "Python-2.0", "Ruby", "Sleepycat", "Unicode-DFS-2016", "Unlicense",
  "UPL-1.0", "Vim", "W3C", "WTFPL", "X11", "Zlib", "ZPL-2.1",
]);
const EXCEPTIONS: ReadonlySet<string> = new Set(["Autoconf-exception-3.0", "Bison-exception-2.2", "Classpath-exception-2.0", "GCC-exception-3.1", "LLVM-exception", "OpenSSL-exception"]);

const BY_LOWER: ReadonlyMap<string, string> = new Map([...KNOWN].map((id) => [id.toLowerCase(), id]));

/** Older SPDX ids, Debian's DEP-5 names and common spellings. */
const ALIASES: Record<string, string> = {
  "gpl-1": "GPL-1.0-only", "gpl-1+": "GPL-1.0-or-later", "gpl-2": "GPL-2.0-only", "gpl-2+": "GPL-2.0-or-later", "gpl-3": "GPL-3.0-only",
  "gpl-3+": "GPL-3.0-or-later", "gpl-2.0": "GPL-2.0-only", "gpl-2.0+": "GPL-2.0-or-later", "gpl-3.0": "GPL-3.0-only", "gpl-3.0+": "GPL-3.0-or-later",
  "lgpl-2": "LGPL-2.0-only", "lgpl-2+": "LGPL-2.0-or-later", "lgpl-2.1": "LGPL-2.1-only", "lgpl-2.1+": "LGPL-2.1-or-later", "lgpl-3": "LGPL-3.0-only",
  "lgpl-3+": "LGPL-3.0-or-later", "lgpl-3.0": "LGPL-3.0-only", "lgpl-3.0+": "LGPL-3.0-or-later", "agpl-3": "AGPL-3.0-only", "agpl-3+": "AGPL-3.0-or-later",
  "gfdl-1.2": "GFDL-1.2-only", "gfdl-1.2+": "GFDL-1.2-or-later", "gfdl-1.3": "GFDL-1.3-only", "gfdl-1.3+": "GFDL-1.3-or-later",
  "apache-2": "Apache-2.0", "apache 2.0": "Apache-2.0", "expat": "MIT", "mit license": "MIT", "bsd": "BSD-3-Clause", "new bsd": "BSD-3-Clause",
  "artistic": "Artistic-1.0-Perl", "mpl-2": "MPL-2.0", "psf": "PSF-2.0", "public-domain": "LicenseRef-public-domain",
  "public domain": "LicenseRef-public-domain", "gplv2": "GPL-2.0-only", "gplv2+": "GPL-2.0-or-later", "gplv3": "GPL-3.0-only",
  "gplv3+": "GPL-3.0-or-later", "lgplv2.1+": "LGPL-2.1-or-later", "lgplv3+": "LGPL-3.0-or-later", "mit/x11": "MIT",
};

/** Python trove classifiers ("License :: OSI Approved :: MIT License") by their last part. */
const CLASSIFIERS: Record<string, string> = {
  "MIT License": "MIT", "BSD License": "LicenseRef-BSD", "Apache Software License": "Apache-2.0", "ISC License (ISCL)": "ISC",
  "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0", "Python Software Foundation License": "PSF-2.0",
  "GNU General Public License v2 (GPLv2)": "GPL-2.0-only", "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
  "GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later", "GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
  "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later", "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
  "The Unlicense (Unlicense)": "Unlicense", "Public Domain": "LicenseRef-public-domain",
};

/** `LicenseRef-` and the name with every character outside SPDX's idstring set replaced. */
export function licenseRef(name: string): string {
  const id = name.trim().replace(/[^A-Za-z0-9.-]+/g, "-").replace(/^-+|-+$/g, "");
  return `LicenseRef-${id === "" ? "unknown" : id}`;
}

/** One licence name as an SPDX id (known, aliased, already a LicenseRef) or a LicenseRef. */
export function licenseId(name: string): string {
  const n = name.trim();
  if (/^LicenseRef-[A-Za-z0-9.-]+$/.test(n)) return n;
  const lower = n.toLowerCase();
  return BY_LOWER.get(lower) ?? ALIASES[lower] ?? (lower.endsWith("+") && BY_LOWER.has(lower.slice(0, -1)) ? `${BY_LOWER.get(lower.slice(0, -1))}+` : licenseRef(n));
}

/**
 * A licence text as an SPDX expression: names joined by and/or/with (any case),
 * with parentheses; `bareSeparator` is how names separated only by spaces or
 * commas combine (Alpine writes "MIT BSD-2-Clause"). Undefined for an empty text.
 */
export function licenseExpression(text: string, bareSeparator: "AND" | "OR" = "AND"): string | undefined {
  const tokens = text.replace(/([()])/g, " $1 ").split(/[\s,;]+/).filter((t) => t !== "");
  if (tokens.length === 0) return undefined;
  const out: string[] = [];
  let expectOperand = true;
  for (const t of tokens) {
    const op = t.toUpperCase();
    if (op === "AND" || op === "OR" || op === "WITH") {
      if (!expectOperand) out.push(op);
      expectOperand = true;
    } else if (t === "(" || t === ")") {
      if (t === "(" && !expectOperand) out.push(bareSeparator);
      out.push(t);
      expectOperand = t === "(";
    } else {
      if (!expectOperand) out.push(bareSeparator);
      if (out[out.length - 1] !== "WITH") out.push(licenseId(t));
      else if (EXCEPTIONS.has(t)) out.push(t);
      else {
        // Only listed exceptions may follow WITH: an unknown one makes the pair one LicenseRef.
        out.pop();
        out.push(licenseRef(`${out.pop() ?? ""}-with-${t}`));
      }
      expectOperand = false;
    }
  }
  const expr = out.join(" ").replace(/\( /g, "(").replace(/ \)/g, ")");
  return balanced(expr) && !expectOperand ? expr : licenseRef(text);
}

function balanced(expr: string): boolean {
  let depth = 0;
  for (const c of expr) {
    depth += c === "(" ? 1 : c === ")" ? -1 : 0;
    if (depth < 0) return false;
  }
  return depth === 0 && !/\(\)/.test(expr);
}

/** The licence of a Python trove classifier, or undefined when it names none we know. */
export function classifierLicense(classifier: string): string | undefined {
  if (!classifier.startsWith("License ::")) return undefined;
  const last = classifier.split("::").pop()!.trim();
  return CLASSIFIERS[last] ?? (last === "OSI Approved" ? undefined : licenseRef(last));
}

/** Distinct expressions joined with AND (each parenthesised when compound), or undefined for none. */
export function allOf(exprs: readonly string[]): string | undefined {
  const distinct = [...new Set(exprs)];
  if (distinct.length <= 1) return distinct[0];
  return distinct.map((e) => (/ (AND|OR) /.test(e) ? `(${e})` : e)).join(" AND ");
}
