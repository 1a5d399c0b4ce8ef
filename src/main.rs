fn main() {
    println!("proxborg-native");
}
