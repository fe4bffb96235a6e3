mod fuzz;
mod round_trips;
mod scanner;
