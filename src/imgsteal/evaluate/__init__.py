"""The judge: experiments (A) victim vs ground truth, (B) surrogate vs victim, (C) surrogate vs ground truth."""
