#!/usr/bin/env node
// Compiles the contracts in src/ with the pinned solc-js (tools/l1, installed by scripts/setup.sh) and writes
// artifacts/<Name>.json (ABI, creation and runtime bytecode). Offline: solc-js carries the compiler.
//
//   node l1-inclusion/contracts/build.js          rebuild the artifacts
//   node l1-inclusion/contracts/build.js --check  exit 1 if the committed artifacts differ from a fresh build
'use strict';
const fs = require('fs');
const path = require('path');

const here = __dirname;
const solc = require(path.join(here, '..', '..', 'tools', 'l1', 'node_modules', 'solc'));
const check = process.argv.includes('--check');

const sources = {};
for (const f of fs.readdirSync(path.join(here, 'src')).filter((f) => f.endsWith('.sol')).sort()) {
  sources[f] = { content: fs.readFileSync(path.join(here, 'src', f), 'utf8') };
}
const input = {
  language: 'Solidity',
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: 'cancun',
    metadata: { bytecodeHash: 'none' },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = output.errors || []; // warnings fail the build too
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(2);

let stale = [];
for (const file of Object.keys(output.contracts).sort()) {
  for (const [name, c] of Object.entries(output.contracts[file])) {
    if (c.evm.bytecode.object === '') continue; // interfaces
    const artifact = {
      contractName: name,
      sourceName: file,
      compiler: solc.version(),
      abi: c.abi,
      bytecode: { object: '0x' + c.evm.bytecode.object },
      deployedBytecode: { object: '0x' + c.evm.deployedBytecode.object },
    };
    const text = JSON.stringify(artifact, null, 2) + '\n';
    const out = path.join(here, 'artifacts', name + '.json');
    if (check) {
      const old = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
      if (old !== text) stale.push(path.relative(process.cwd(), out));
    } else {
      fs.writeFileSync(out, text);
      console.log('wrote', path.relative(process.cwd(), out));
    }
  }
}
if (stale.length > 0) {
  console.error('stale artifacts (run `node l1-inclusion/contracts/build.js`):', stale.join(', '));
  process.exit(1);
}
