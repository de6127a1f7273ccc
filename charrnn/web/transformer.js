// The Transformer's step (charrnn/families/transformer/model.py, GPT.step) with its key/value cache, and the
// sampler's window rule (window_start): when the window holds `context` characters, the next one keeps the
// last context - stride of them and reads them again from position 0 before it.
CharrnnSteps.transformer = function (W, config, M) {
  "use strict";
  var L = config.n_layers, H = config.hidden, C = config.context, heads = config.heads, hd = H / heads;
  var S = config.stride, scale = 1 / Math.sqrt(hd);
  var x = M.floats(H), a = M.floats(H), qkv = M.floats(3 * H), y = M.floats(H);
  var proj = M.floats(H), up = M.floats(4 * H), down = M.floats(H);
  var att = new Float64Array(C), logits = M.floats(config.n_outputs);
  var K = [], V = [], tokens = [], pos = 0;
  for (var k = 0; k < L; k++) { K.push(M.floats(C * H)); V.push(M.floats(C * H)); }
  function reset() { tokens = []; pos = 0; }
  function read(id) {  // one character at position `pos`, its keys and values into the cache
    var j, t, n;
    var e = W["wte.weight"].row(id), wp = W["wpe.weight"].row(pos);
    for (j = 0; j < H; j++) x[j] = e[j] + wp[j];
    for (var b = 0; b < L; b++) {
      var pre = "blocks." + b + ".";
      M.layerNorm(x, W[pre + "ln1.weight"], a);
      qkv.fill(0);
      M.matvec(W[pre + "attn.qkv.weight"], a, qkv);
      K[b].set(qkv.subarray(H, 2 * H), pos * H);
      V[b].set(qkv.subarray(2 * H, 3 * H), pos * H);
      for (n = 0; n < heads; n++) {
        var o = n * hd, max = -Infinity, total = 0;
        for (t = 0; t <= pos; t++) {
          var s = 0;
          for (j = 0; j < hd; j++) s += qkv[o + j] * K[b][t * H + o + j];
          att[t] = s * scale;
          if (att[t] > max) max = att[t];
        }
        for (t = 0; t <= pos; t++) total += (att[t] = Math.exp(att[t] - max));
        for (j = 0; j < hd; j++) {
          var sum = 0;
          for (t = 0; t <= pos; t++) sum += att[t] * V[b][t * H + o + j];
          y[o + j] = sum / total;
        }
      }
      proj.fill(0);
      M.matvec(W[pre + "attn.proj.weight"], y, proj);
      for (j = 0; j < H; j++) x[j] += proj[j];
      M.layerNorm(x, W[pre + "ln2.weight"], a);
      up.fill(0);
      M.matvec(W[pre + "mlp.0.weight"], a, up);
      for (j = 0; j < 4 * H; j++) up[j] = M.gelu(up[j]);
      down.fill(0);
      M.matvec(W[pre + "mlp.2.weight"], up, down);
      for (j = 0; j < H; j++) x[j] += down[j];
    }
    tokens.push(id);
    pos++;
    M.layerNorm(x, W["ln_f.weight"], a);
    logits.fill(0);
    M.matvec(W["wte.weight"], a, logits, config.n_outputs);  // the output layer is the embedding
    return logits;
  }
  function step(id) {
    if (pos === C) {
      var keep = tokens.slice(S);
      reset();
      keep.forEach(read);
    }
    return read(id);
  }
  reset();
  return {reset: reset, step: step};
};
