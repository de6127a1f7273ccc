// The classic RNNs' step (charrnn/families/rnn/model.py: lstm, gru, rnn), by the equations of nn.LSTM, nn.GRU
// and nn.RNN on the model's own weights: gates = W_ih x + b_ih + W_hh h + b_hh, in the rows' order
// i, f, g, o (LSTM) and r, z, n (GRU, whose n reads r * (W_hn h + b_hn)).
CharrnnSteps.rnn = function (W, config, M) {
  "use strict";
  var L = config.n_layers, H = config.hidden, kind = config.model, G = {lstm: 4, gru: 3, rnn: 1}[kind];
  var gi = M.floats(G * H), gh = M.floats(G * H), logits = M.floats(config.n_outputs);
  var h = [], c = [], layers = [];
  for (var k = 0; k < L; k++) {
    layers.push({ih: W["rnn.weight_ih_l" + k], hh: W["rnn.weight_hh_l" + k],
                 bih: W["rnn.bias_ih_l" + k].data, bhh: W["rnn.bias_hh_l" + k].data});
    h.push(M.floats(H));
    c.push(M.floats(H));
  }
  function reset() {
    for (var k = 0; k < L; k++) { h[k].fill(0); c[k].fill(0); }
  }
  function step(id) {
    var x = W["embed.weight"].row(id), j;
    for (var k = 0; k < L; k++) {
      var l = layers[k], hk = h[k], ck = c[k];
      gi.set(l.bih); gh.set(l.bhh);
      M.matvec(l.ih, x, gi);
      M.matvec(l.hh, hk, gh);
      if (kind === "lstm") {
        for (j = 0; j < H; j++) {
          var i = M.sigmoid(gi[j] + gh[j]), f = M.sigmoid(gi[H + j] + gh[H + j]);
          var g = Math.tanh(gi[2 * H + j] + gh[2 * H + j]), o = M.sigmoid(gi[3 * H + j] + gh[3 * H + j]);
          ck[j] = f * ck[j] + i * g;
          hk[j] = o * Math.tanh(ck[j]);
        }
      } else if (kind === "gru") {
        for (j = 0; j < H; j++) {
          var r = M.sigmoid(gi[j] + gh[j]), z = M.sigmoid(gi[H + j] + gh[H + j]);
          var n = Math.tanh(gi[2 * H + j] + r * gh[2 * H + j]);
          hk[j] = (1 - z) * n + z * hk[j];
        }
      } else {
        for (j = 0; j < H; j++) hk[j] = Math.tanh(gi[j] + gh[j]);
      }
      x = hk;
    }
    logits.set(W["head.bias"].data);
    M.matvec(W["head.weight"], x, logits);
    return logits;
  }
  reset();
  return {reset: reset, step: step};
};
