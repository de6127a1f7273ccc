// The page's loop around a model's step (charrnn/web/<family>.js): the weights decoded from the page,
// the tokenizer, sampling (temperature, top-p), and the text streamed as it is made.
// Links set the controls: play.html#prime=KING&temperature=0&length=300&go (go: generate at once);
// play.html#bench=2000 times 2000 greedy steps and writes {"chars_per_s": ...} into #bench; #js runs the
// matrix products in plain JavaScript instead of WebAssembly.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("model").textContent);
  var params = new URLSearchParams(location.hash.slice(1));

  // --- WebAssembly: the matrix-vector products (charrnn/export/wasm.py), on arrays in its memory ------
  var wasm = null, arena = null, used = 0;
  if (D.wasm && !params.has("js") && typeof WebAssembly === "object") {
    try {
      var floatsNeeded = 1 << 20;  // the steps' own buffers
      Object.keys(D.weights).forEach(function (name) {
        floatsNeeded += D.weights[name].shape.reduce(function (a, b) { return a * b; }, 1) + 4;
      });
      var memory = new WebAssembly.Memory({initial: Math.ceil(floatsNeeded * 4 / 65536)});
      wasm = new WebAssembly.Instance(new WebAssembly.Module(bytes(D.wasm)), {env: {mem: memory}}).exports.matvec;
      arena = memory.buffer;
    } catch (e) {  // no WebAssembly SIMD (an old browser): plain JavaScript does it all
      wasm = null;
    }
  }
  function floats(n) {  // a Float32Array, in WebAssembly's memory while there is room (16-byte aligned)
    if (arena && used + 4 * n <= arena.byteLength) {
      var a = new Float32Array(arena, used, n);
      used += Math.ceil(n / 4) * 16;
      return a;
    }
    return new Float32Array(n);
  }

  // --- the weights: base64 in the page, fp32, fp16, or int8 with one fp32 scale per row -------------
  function bytes(b64) {
    var s = atob(b64), a = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
    return a;
  }
  function halfTable() {  // every fp16 bit pattern -> its value
    var t = new Float32Array(65536);
    for (var h = 0; h < 65536; h++) {
      var sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
      t[h] = e === 0 ? sign * m * Math.pow(2, -24)
           : e === 31 ? (m ? NaN : sign * Infinity) : sign * (1 + m / 1024) * Math.pow(2, e - 15);
    }
    return t;
  }
  var half = null;
  function tensor(t) {
    var raw = bytes(t.data), n = 1, data, i;
    t.shape.forEach(function (d) { n *= d; });
    var cols = t.shape.length > 1 ? n / t.shape[0] : n, rows = t.shape.length > 1 ? t.shape[0] : 1;
    data = floats(n);
    if (t.dtype === "fp32") {
      data.set(new Float32Array(raw.buffer));
    } else if (t.dtype === "fp16") {
      half = half || halfTable();
      var u = new Uint16Array(raw.buffer);
      for (i = 0; i < n; i++) data[i] = half[u[i]];
    } else {
      var q = new Int8Array(raw.buffer), scale = new Float32Array(bytes(t.scale).buffer);
      for (var r = 0; r < rows; r++) for (i = r * cols; i < (r + 1) * cols; i++) data[i] = q[i] * scale[r];
    }
    return {data: data, rows: rows, cols: cols,
            row: function (k) { return this.data.subarray(k * this.cols, (k + 1) * this.cols); }};
  }
  var W = {};
  Object.keys(D.weights).forEach(function (name) { W[name] = tensor(D.weights[name]); });
  Object.keys(D.tied).forEach(function (alias) { W[alias] = W[D.tied[alias]]; });

  // --- arithmetic the steps share ------------------------------------------------------------------
  var M = {
    floats: floats,
    // out[r] += w[r] . x for the first `rows` rows of w (all by default): in WebAssembly when all three
    // are in its memory, else in JavaScript with four sums (for the JIT)
    matvec: function (w, x, out, rows) {
      var d = w.data, cols = w.cols, n = rows === undefined ? w.rows : rows;
      if (wasm && cols % 8 === 0 && d.buffer === arena && x.buffer === arena && out.buffer === arena) {
        wasm(d.byteOffset, x.byteOffset, out.byteOffset, n, cols);
        return;
      }
      for (var r = 0, base = 0; r < n; r++, base += cols) {
        var s0 = 0, s1 = 0, s2 = 0, s3 = 0, c = 0;
        for (; c + 4 <= cols; c += 4) {
          s0 += d[base + c] * x[c]; s1 += d[base + c + 1] * x[c + 1];
          s2 += d[base + c + 2] * x[c + 2]; s3 += d[base + c + 3] * x[c + 3];
        }
        for (; c < cols; c++) s0 += d[base + c] * x[c];
        out[r] += (s0 + s1) + (s2 + s3);
      }
    },
    sigmoid: function (x) { return 1 / (1 + Math.exp(-x)); },
    softplus: function (x) { return x > 20 ? x : Math.log1p(Math.exp(x)); },  // torch's threshold
    // LayerNorm without bias (eps 1e-5, as nn.LayerNorm): out = (x - mean) / sqrt(var + eps) * weight
    layerNorm: function (x, weight, out) {
      var n = x.length, mean = 0, v = 0, i;
      for (i = 0; i < n; i++) mean += x[i];
      mean /= n;
      for (i = 0; i < n; i++) v += (x[i] - mean) * (x[i] - mean);
      var inv = 1 / Math.sqrt(v / n + 1e-5), w = weight.data;
      for (i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * w[i];
    },
    geluTanh: function (x) { return 0.5 * x * (1 + Math.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); },
    gelu: function (x) { return 0.5 * x * (1 + M.erf(x / Math.SQRT2)); },
    erf: function (x) {  // W. J. Cody's rational approximation below 0.5; 1 - erfc above
      var t = x * x;
      if (t < 0.25) {
        return x * ((((0.185777706184603153 * t + 3.16112374387056560) * t + 113.864154151050156) * t
          + 377.485237685302021) * t + 3209.37758913846947)
          / ((((t + 23.6012909523441209) * t + 244.024637934444173) * t + 1282.61652607737228) * t
          + 2844.23683343917062);
      }
      var y = 1 - M.erfcPos(Math.abs(x));
      return x < 0 ? -y : y;
    },
    erfcPos: function (x) {  // erfc(x) for x >= 0.5 (Numerical Recipes' erfc: fractional error below 1.2e-7)
      var t = 1 / (1 + 0.5 * x);
      return t * Math.exp(-x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
    }
  };

  var model = CharrnnSteps[D.step](W, D.config, M);

  // --- characters and ids ----------------------------------------------------------------------------
  var ids = new Map();
  D.chars.forEach(function (ch, i) { ids.set(ch, i); });
  function encode(text) {
    var out = [], bad = [], utf8 = new TextEncoder();
    for (var ch of text) {
      if (ids.has(ch)) out.push(ids.get(ch));
      else if (D.byte_fallback) utf8.encode(ch).forEach(function (b) { out.push(D.chars.length + b); });
      else if (bad.indexOf(ch) < 0) bad.push(ch);
    }
    if (bad.length) throw new RangeError("not in this model's vocabulary: " + bad.map(JSON.stringify).join(" "));
    return out.length ? out : [ids.has("\n") ? ids.get("\n") : 0];  // no prime: start as after a line break
  }

  // --- sampling --------------------------------------------------------------------------------------
  var seed = crypto.getRandomValues(new Uint32Array(1))[0];
  function random() {  // mulberry32
    seed = (seed + 0x6D2B79F5) | 0;
    var t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  function pick(logits, temperature, topP) {
    var n = D.chars.length, best = 0, i;  // byte tokens are read, never sampled
    for (i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    if (temperature === 0) return best;
    var p = new Float64Array(n), total = 0;
    for (i = 0; i < n; i++) total += (p[i] = Math.exp((logits[i] - logits[best]) / temperature));
    if (topP < 1) {  // keep the most likely characters until they reach top-p (the first always stays)
      var order = Array.from(p.keys()).sort(function (a, b) { return p[b] - p[a]; }), seen = 0, kept = 0;
      for (i = 0; i < n; i++) {
        if (seen >= topP * total) p[order[i]] = 0;
        else { seen += p[order[i]]; kept += p[order[i]]; }
      }
      total = kept;
    }
    var u = random() * total;
    for (i = 0; i < n; i++) if ((u -= p[i]) < 0) return i;
    return best;
  }

  // --- the page ------------------------------------------------------------------------------------
  var $ = function (id) { return document.getElementById(id); };
  var out = $("out"), status = $("status"), button = $("generate"), running = false;

  function number(id, lo, hi, name) {
    var v = Number($(id).value);
    if (!(v >= lo && v <= hi)) throw new RangeError(name + " must be between " + lo + " and " + hi);
    return v;
  }

  function generate() {
    if (running) { running = false; return; }
    var prime = $("prime").value, temperature, topP, length, logits, made = 0;
    try {
      temperature = number("temperature", 0, 100, "temperature");
      topP = number("top-p", 1e-6, 1, "top-p");
      length = Math.floor(number("length", 1, 1e6, "length"));
      model.reset();
      encode(prime).forEach(function (id) { logits = model.step(id); });
    } catch (e) {
      status.textContent = e.message;
      return;
    }
    out.textContent = prime;
    delete out.dataset.done;
    running = true;
    button.textContent = "Stop";
    var t0 = performance.now();
    function chunk() {
      var text = "", until = performance.now() + 25;  // hand the page back every 25 ms, to draw the text
      while (made < length && running) {
        var id = pick(logits, temperature, topP);
        text += D.chars[id];
        if (++made < length) logits = model.step(id);
        if (performance.now() > until) break;
      }
      out.appendChild(document.createTextNode(text));
      if (made < length && running) { setTimeout(chunk, 0); return; }
      var s = (performance.now() - t0) / 1000;
      status.textContent = made + " characters in " + s.toFixed(2) + " s" +
        (s > 0 ? " (" + Math.round(made / s) + " per second)" : "") + ", " + engine;
      running = false;
      button.textContent = "Generate";
      out.dataset.done = "1";
    }
    setTimeout(chunk, 0);
  }
  button.addEventListener("click", generate);

  function bench(n) {  // n greedy characters after the prime, timed on the page, at once (no streaming)
    var logits, text = "";
    model.reset();
    encode($("prime").value).forEach(function (id) { logits = model.step(id); });
    var t0 = performance.now();
    for (var i = 0; i < n; i++) {
      var id = pick(logits, 0, 1);
      text += D.chars[id];
      logits = model.step(id);
    }
    var s = (performance.now() - t0) / 1000;
    $("bench").textContent = JSON.stringify({chars: n, seconds: s, chars_per_s: n / s, wasm: !!wasm, text: text});
  }

  var engine = wasm ? "WebAssembly (SIMD)" : "JavaScript";
  status.textContent = "ready: the step runs in " + engine;
  document.body.dataset.engine = wasm ? "wasm" : "js";
  if (params.has("prime")) $("prime").value = params.get("prime");
  [["temperature", "temperature"], ["top_p", "top-p"], ["length", "length"]].forEach(function (p) {
    if (params.has(p[0])) $(p[1]).value = params.get(p[0]);
  });
  document.body.dataset.ready = "1";
  if (params.has("bench")) bench(Number(params.get("bench")) || 1000);
  else if (params.has("go")) generate();
})();
