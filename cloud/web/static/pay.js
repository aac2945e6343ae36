// The checkout page: opens the configured provider's own Checkout (Razorpay's checkout.js or
// Stripe's Payment Element, loaded by the page under a CSP that allows exactly that script)
// and hands its answer to the page's plain form, which posts it with the CSRF token to
// /app/payments/{id}/verify — where the server verifies it (cloud/payments/checkout.py).
(function () {
  "use strict";
  var form = document.getElementById("verify-form");
  var open = document.getElementById("pay-open");
  var problem = document.getElementById("pay-error");
  if (!form || !open) return;
  function fail(text) { problem.textContent = text; problem.hidden = false; open.disabled = false; }
  var provider = form.getAttribute("data-provider");
  if (provider === "razorpay") {
    open.addEventListener("click", function () {
      if (typeof window.Razorpay === "undefined") { fail("Razorpay could not be loaded."); return; }
      open.disabled = true;
      var checkout = new window.Razorpay({
        key: form.getAttribute("data-key"),
        order_id: form.getAttribute("data-order"),
        amount: Number(form.getAttribute("data-amount")),
        currency: form.getAttribute("data-currency"),
        name: form.getAttribute("data-name"),
        description: form.getAttribute("data-description"),
        handler: function (answer) {
          form.elements.razorpay_payment_id.value = answer.razorpay_payment_id;
          form.elements.razorpay_order_id.value = answer.razorpay_order_id;
          form.elements.razorpay_signature.value = answer.razorpay_signature;
          form.submit();
        },
        modal: { ondismiss: function () { open.disabled = false; } }
      });
      checkout.on("payment.failed", function (r) { fail(r.error && r.error.description || ""); });
      checkout.open();
    });
  } else if (provider === "stripe") {
    if (typeof window.Stripe === "undefined") { fail("Stripe could not be loaded."); return; }
    var stripe = window.Stripe(form.getAttribute("data-key"));
    var elements = stripe.elements({ clientSecret: form.getAttribute("data-secret") });
    elements.create("payment").mount("#stripe-element");
    open.addEventListener("click", function () {
      open.disabled = true;
      stripe.confirmPayment({ elements: elements, redirect: "if_required" }).then(function (r) {
        if (r.error) { fail(r.error.message || ""); return; }
        form.elements.payment_intent.value = r.paymentIntent.id;
        form.submit();
      });
    });
  }
})();
